"""Hostile-but-realistic input to the SB3 algorithms: clear errors naming the argument, never NaN weights or a hang."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_pg_extras import GRPO, REINFORCE, REINFORCEWithBaseline

SMALL = dict(n_steps=16, policy_kwargs=dict(net_arch=[8]))


class ScaledRewards(gym.Env):
    """Episodes of 1-4 steps (action 1 ends them); reward `scale` per step."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        done = int(action) == 1 or self.t >= 4
        return np.zeros(2, np.float32), self.scale, done, False, {}


def env(scale=1.0, n_envs=2):
    return make_vec_env(lambda: ScaledRewards(scale), n_envs=n_envs)


ALGOS = {
    "GRPO": lambda e, **kw: GRPO("MlpPolicy", e, group_size=2, **{**SMALL, **kw}),
    "REINFORCE": lambda e, **kw: REINFORCE("MlpPolicy", e, **{**SMALL, **kw}),
    "REINFORCEWithBaseline": lambda e, **kw: REINFORCEWithBaseline("MlpPolicy", e, **{**SMALL, **kw}),
}


@pytest.mark.parametrize("name", list(ALGOS))
def test_rewards_that_overflow_give_a_clear_error_and_no_nan_weights(name):
    model = ALGOS[name](env(1e38))
    with pytest.raises(ValueError, match=r"overflow.*rescale|non-finite.*rescale|VecNormalize"):
        model.learn(200)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_tiny_rewards_still_move_grpo():
    model = ALGOS["GRPO"](env(1e-8))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


@pytest.mark.parametrize("name", list(ALGOS))
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(learning_rate="3e-4"), "learning_rate.*string"),
        (dict(gamma="0.99"), r"gamma='0.99' is a string: write the number without quotes"),
        (dict(ent_coef="0.1"), "ent_coef.*string"),
        (dict(max_grad_norm=float("nan")), "max_grad_norm"),
        (dict(n_steps=0), "n_steps"),
    ],
)
def test_bad_numbers_are_named_at_construction(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ALGOS[name](env(), **kwargs)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: REINFORCE("MlpPolicy", env(), normalize_returns="no"), "normalize_returns"),
        (lambda: REINFORCEWithBaseline("MlpPolicy", env(), normalize_advantage="no"), "normalize_advantage"),
        (lambda: REINFORCEWithBaseline("MlpPolicy", env(), bootstrap_truncated=1), "bootstrap_truncated"),
        (lambda: GRPO("MlpPolicy", env(), rloo="yes"), "rloo"),
        (lambda: GRPO("MlpPolicy", env(), beta="0.1"), "beta='0.1' is a string"),
        (lambda: GRPO("MlpPolicy", env(), target_kl="0.01"), "target_kl"),
        (lambda: GRPO("MlpPolicy", env(), clip_range_high=-0.1), "clip_range_high"),
    ],
)
def test_booleans_must_be_booleans_and_strings_are_not_numbers(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_grpo_with_any_optimizer_class():
    for optimizer_class in (th.optim.AdamW, th.optim.SGD, th.optim.RMSprop):
        model = GRPO("MlpPolicy", env(), group_size=2, n_steps=16, policy_kwargs=dict(optimizer_class=optimizer_class))
        model.learn(64)
        assert all(th.isfinite(p).all() for p in model.policy.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# Runs without signal warn once, naming the cause and the fix (pg_extras.signal)
# ----------------------------------------------------------------------------------------------------------------------
class Endless(ScaledRewards):
    """Never terminates; truncated after ``limit`` steps (None: never ends); reward ``reward`` or the action."""

    def __init__(self, limit: int | None = 5, reward: float | None = None):
        self.limit, self.reward = limit, reward

    def step(self, action):
        self.t += 1
        truncated = self.limit is not None and self.t >= self.limit
        reward = float(action) if self.reward is None else self.reward
        return (
            self.np_random.uniform(-1, 1, 2).astype(np.float32),
            reward,
            False,
            truncated,
            {"TimeLimit.truncated": truncated},
        )


def _no_signal(model, steps: int) -> list[str]:
    import warnings

    from pg_extras.signal import NoSignalWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.learn(steps)
    return [str(w.message) for w in caught if issubclass(w.category, NoSignalWarning)]


@pytest.mark.parametrize("name", ["GRPO", "REINFORCE"])
def test_every_episode_truncated_and_masked_warns_once_and_moves_nothing(name):
    model = ALGOS[name](make_vec_env(lambda: Endless(limit=5), n_envs=2), mask_truncated_completions=True)
    before = [p.detach().clone() for p in model.policy.parameters()]
    messages = _no_signal(model, 200)
    assert len(messages) == 1 and "mask_truncated_completions=False" in messages[0], messages
    assert all(th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


def test_grpo_on_an_env_that_never_ends_warns_that_no_group_completes():
    model = GRPO("MlpPolicy", make_vec_env(lambda: Endless(limit=None), n_envs=2), group_size=2, **SMALL)
    messages = _no_signal(model, 2000)
    assert len(messages) == 1 and "no group completed" in messages[0] and "TimeLimit" in messages[0], messages
    assert model._n_updates == 0


def test_zero_spread_in_every_group_warns_after_patience_updates():
    # MountainCar: no member reaches the flag in a few thousand steps, every group has zero spread
    model = GRPO("MlpPolicy", make_vec_env("MountainCar-v0", n_envs=2, seed=0), group_size=2, n_steps=200, seed=0)
    messages = _no_signal(model, 200 * 2 * 6)
    assert len(messages) == 1 and "zero spread" in messages[0] and "frac_zero_std_groups" in messages[0], messages


def test_a_constant_zero_reward_and_gamma_zero_warn():
    model = REINFORCE("MlpPolicy", make_vec_env(lambda: Endless(limit=4, reward=0.0), n_envs=2), **SMALL)
    messages = _no_signal(model, 16 * 2 * 6)
    assert len(messages) == 1 and "every reward is 0" in messages[0], messages
    from pg_extras.signal import NoSignalWarning

    with pytest.warns(NoSignalWarning, match="gamma=0"):
        REINFORCE("MlpPolicy", env(), gamma=0.0)


# ----------------------------------------------------------------------------------------------------------------------
# Schedules, observations, rewards, spaces and save: clear errors, no silent damage
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), -1e-3])
@pytest.mark.parametrize("name", ["GRPO", "REINFORCE", "TRPO"])
def test_a_learning_rate_schedule_is_checked_at_every_update(name, bad):
    from sb3_pg_extras import TRPO

    def schedule(progress: float) -> float:  # fine at progress 1 and 0, bad in between
        return 1e-3 if progress in (0.0, 1.0) or progress > 0.6 else bad

    make = ALGOS.get(name) or (lambda e, **kw: TRPO("MlpPolicy", e, n_steps=16, batch_size=16, **kw))
    model = make(env(), learning_rate=schedule)
    with pytest.raises(ValueError, match=r"learning_rate.*progress_remaining"):
        model.learn(400)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


class NaNAfter(gym.Env):
    """Observations (or rewards) turn NaN after ``after`` steps; Discrete or Box actions."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, box: bool = False, what: str = "obs", after: int = 10):
        self.action_space = spaces.Box(-1, 1, (1,), np.float32) if box else spaces.Discrete(2)
        self.what, self.after, self.steps = what, after, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        bad = self.steps > self.after
        obs = np.full(2, np.nan if bad and self.what == "obs" else 0.0, np.float32)
        reward = float("nan") if bad and self.what == "reward" else 1.0
        return obs, reward, self.t >= 4, False, {}


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("box", [False, True])
@pytest.mark.parametrize("name", ["GRPO", "REINFORCE", "TRPO"])
def test_nan_observations_are_named(name, box, validate, monkeypatch):
    from sb3_pg_extras import TRPO

    # with torch's distribution argument checks on or off (another library may turn them off process-wide)
    monkeypatch.setattr(th.distributions.Distribution, "_validate_args", validate)
    make = ALGOS.get(name) or (lambda e, **kw: TRPO("MlpPolicy", e, n_steps=16, batch_size=16, **kw))
    model = make(make_vec_env(lambda: NaNAfter(box), n_envs=2))
    with pytest.raises(ValueError, match="observations"):
        model.learn(300)


def test_trpo_gae_names_nan_rewards():
    from sb3_pg_extras import TRPO

    model = TRPO("MlpPolicy", make_vec_env(lambda: NaNAfter(what="reward"), n_envs=2), n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match="TRPO rollout rewards"):
        model.learn(300)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (spaces.Discrete(3, start=1), "starts at 1"),
        (spaces.MultiBinary([2, 2]), r"MultiBinary\(4\)"),
        (spaces.Box(-np.inf, np.inf, (2,), np.float32), "infinite bounds"),
    ],
)
@pytest.mark.parametrize("name", ["GRPO", "REINFORCE", "TRPO"])
def test_action_spaces_sb3_would_mishandle_are_refused_with_the_fix(name, space, match):
    from sb3_pg_extras import TRPO

    class Env(gym.Env):
        observation_space = spaces.Box(-1, 1, (2,), np.float32)
        action_space = space

        def reset(self, *, seed=None, options=None):
            return np.zeros(2, np.float32), {}

        def step(self, action):
            return np.zeros(2, np.float32), 0.0, True, False, {}

    make = ALGOS.get(name) or (lambda e, **kw: TRPO("MlpPolicy", e, n_steps=16, batch_size=16, **kw))
    with pytest.raises(ValueError, match=match):
        make(make_vec_env(Env, n_envs=2))


@pytest.mark.parametrize("name", ["GRPO", "REINFORCE"])
def test_a_failing_save_leaves_the_existing_file_intact(name, tmp_path, monkeypatch):
    import zipfile

    from stable_baselines3.common import save_util

    model = ALGOS[name](env())
    path = tmp_path / "model.zip"
    model.save(path)
    good = path.read_bytes()
    monkeypatch.setattr(save_util.th, "save", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good and zipfile.is_zipfile(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.zip"]  # no temporary file left behind
    monkeypatch.undo()
    model.save(tmp_path / "other")  # SB3's suffix rule: "other" -> "other.zip"
    assert (tmp_path / "other.zip").is_file()
