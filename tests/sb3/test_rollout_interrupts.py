"""The episodic collection loop under interruptions and lock-step rounds (the trust issue's silent-result cases).

* ``learn()`` stopped by an exception (a callback raising, the env raising) and resumed with
  ``reset_num_timesteps=False`` never trains on an episode without its first steps;
* lock-step groups complete for any group size and number of envs (``group_size > n_envs`` included).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_helpers import capture_training_batches
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_pg_extras import GRPO, REINFORCE, TRPO, REINFORCEWithBaseline


class CountingEnv(gym.Env):
    """Observation ``[t, seed feature]``: an episode's first observation has ``t == 0``; episodes last 3-12 steps."""

    observation_space = spaces.Box(0.0, 100.0, (2,), np.float32)
    action_space = spaces.Discrete(2)
    raise_at: int | None = None  # global step at which step() raises once (class-wide, as a flaky simulator)
    steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, int(self.np_random.integers(3, 13))
        return np.array([0.0, self.length], np.float32), {}

    def step(self, action):
        CountingEnv.steps += 1
        if CountingEnv.raise_at is not None and CountingEnv.steps == CountingEnv.raise_at:
            CountingEnv.raise_at = None
            raise RuntimeError("simulator crashed")
        self.t += 1
        return np.array([self.t, self.length], np.float32), float(action), self.t >= self.length, False, {}


SMALL = dict(n_steps=16, seed=0, policy_kwargs=dict(net_arch=[8]))
CONFIGS = {
    "REINFORCE": lambda env: REINFORCE("MlpPolicy", env, **SMALL),
    "REINFORCE(group)": lambda env: REINFORCE("MlpPolicy", env, advantage_estimator="group", group_size=2, **SMALL),
    "REINFORCEWithBaseline": lambda env: REINFORCEWithBaseline("MlpPolicy", env, **SMALL),
    "TRPO(mc)": lambda env: TRPO("MlpPolicy", env, advantage_estimator="mc", batch_size=16, **SMALL),
    "TRPO(group)": lambda env: TRPO("MlpPolicy", env, advantage_estimator="group", group_size=2, batch_size=16, **SMALL),
    "GRPO": lambda env: GRPO("MlpPolicy", env, group_size=2, batch_size=None, **SMALL),
    "GRPO(mc)": lambda env: GRPO("MlpPolicy", env, advantage_estimator="mc", batch_size=None, **SMALL),
}


class RaiseAt(BaseCallback):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps == self.at:
            raise KeyboardInterrupt
        return True


def _broken_episodes(seen) -> list[list[float]]:
    """The trained episodes whose steps are not t = 0, 1, ..., length - 1 (cut at the start, or with a gap)."""
    broken = []
    for batch, _ in seen:
        for episode in th.split(batch.observations[:, 0], batch.lengths.tolist()):
            if not th.equal(episode, th.arange(len(episode), dtype=episode.dtype)):
                broken.append(episode.tolist())
    return broken


@pytest.mark.parametrize("how", ["callback", "env"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_an_interrupted_rollout_leaves_no_cut_episode_to_train_on(name, how):
    CountingEnv.steps, CountingEnv.raise_at = 0, (45 if how == "env" else None)
    model = CONFIGS[name](make_vec_env(CountingEnv, n_envs=2, seed=0))
    seen = capture_training_batches(model)
    with pytest.raises(KeyboardInterrupt if how == "callback" else RuntimeError):
        model.learn(400, callback=RaiseAt(46) if how == "callback" else None)
    model.learn(400, reset_num_timesteps=False)
    assert seen, "no update after the interruption"
    assert not _broken_episodes(seen)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("GRPO", lambda env: GRPO("MlpPolicy", env, n_steps=32, group_size=5, group_schedule="lockstep", seed=0)),
        ("REINFORCE", lambda env: REINFORCE("MlpPolicy", env, n_steps=32, advantage_estimator="group", group_size=5,
                                            group_schedule="lockstep", seed=0)),
        ("TRPO", lambda env: TRPO("MlpPolicy", env, n_steps=32, batch_size=32, advantage_estimator="group", group_size=5,
                                  group_schedule="lockstep", seed=0)),
    ],
)  # fmt: skip
def test_lockstep_groups_larger_than_the_env_count_complete(name, make):
    model = make(make_vec_env("CartPole-v1", n_envs=3, seed=0))
    seen = capture_training_batches(model)
    model.learn(3000)
    assert model._n_updates > 0 and seen
    scheduler = model._slots.scheduler
    assert scheduler.groups_completed > 0 and scheduler.groups_abandoned == 0
    for batch, _ in seen:  # whole groups of 5 members, each from its group's start state
        groups, counts = th.unique(batch.group[th.cumsum(batch.lengths, 0) - batch.lengths], return_counts=True)
        assert (counts == 5).all(), (groups, counts)
