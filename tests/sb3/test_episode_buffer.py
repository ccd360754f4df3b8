"""EpisodeBuffer and SlotEpisodes: whole episodes only, carry-over, groups, discards, the never-ending guard."""

from __future__ import annotations

import doctest

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize

from pg_extras import GroupScheduler, estimate_advantages, returns_to_go
from sb3_pg_extras.common import buffers as buffers_module
from sb3_pg_extras.common import group_env as group_env_module
from sb3_pg_extras.common.buffers import EpisodeBuffer, episode_minibatches
from sb3_pg_extras.common.group_env import GroupResetWrapper, SlotEpisodes

OBS = spaces.Box(-np.inf, np.inf, (2,), np.float32)


def make_buffer(n_steps, n_envs, **kwargs):
    return EpisodeBuffer(n_steps, OBS, spaces.Discrete(3), device="cpu", n_envs=n_envs, **kwargs)


def fill(buf, episode, terminated, truncated, tag, rewards=None):
    """Add a [T, N] rollout with the given episode ids; observation = (tag, t) identifies each step."""
    T, N = episode.shape
    rewards = np.ones((T, N)) if rewards is None else rewards
    for t in range(T):
        obs = np.stack([np.full(N, tag, np.float32), np.full(N, t, np.float32) + 100 * np.arange(N)], 1)
        buf.add(obs, np.zeros(N), rewards[t], terminated[t], truncated[t], th.full((N,), -0.5), episode[t])


def test_doctests():
    for module in (buffers_module, group_env_module):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_only_ended_episodes_are_ready_and_running_ones_carry_over():
    buf = make_buffer(4, 2)
    # env 0: episode 0 (3 steps, terminated) then episode 2 starts; env 1: episode 1 runs on
    episode = np.array([[0, 1], [0, 1], [0, 1], [2, 1]])
    term = np.array([[0, 0], [0, 0], [1, 0], [0, 0]], bool)
    fill(buf, episode, term, np.zeros_like(term), tag=0)
    batch = buf.finalize()
    assert batch.lengths.tolist() == [3] and batch.episode.tolist() == [0, 0, 0]
    assert batch.terminated.tolist() == [False, False, True]
    assert buf.num_pending_steps == 5
    buf.reset()
    episode = np.array([[2, 1], [2, 3], [2, 3], [2, 3]])
    trunc = np.array([[0, 1], [0, 0], [0, 0], [1, 0]], bool)
    fill(buf, episode, np.zeros_like(trunc), trunc, tag=1)
    batch = buf.finalize()
    # episode 1 (5 steps, truncated) and episode 2 (1 + 4 steps, truncated) are whole, in time order
    assert batch.lengths.tolist() == [5, 5] and batch.episode.tolist() == [1] * 5 + [2] * 5
    obs = batch.observations.numpy()
    assert obs[:5, 0].tolist() == [0, 0, 0, 0, 1] and obs[5:, 0].tolist() == [0, 1, 1, 1, 1]
    assert buf.num_pending_steps == 3  # episode 3 runs on
    # the flat batch is the layout estimate_advantages takes: returns restart at every episode end
    est = estimate_advantages("mc", batch.rewards, batch.terminated, batch.truncated, gamma=1.0)
    assert est.advantages.tolist() == [5, 4, 3, 2, 1] * 2
    assert th.equal(est.returns, returns_to_go(batch.rewards, batch.terminated, batch.truncated, gamma=1.0))


def test_no_carry_over_drops_split_episodes_and_their_continuations():
    buf = make_buffer(3, 1, carry_over=False)
    fill(buf, np.array([[0], [0], [1]]), np.array([[0], [1], [0]], bool), np.zeros((3, 1), bool), tag=0)
    assert buf.finalize().lengths.tolist() == [2] and buf.num_pending_steps == 0
    buf.reset()
    fill(buf, np.array([[1], [2], [2]]), np.array([[1], [0], [1]], bool), np.zeros((3, 1), bool), tag=1)
    batch = buf.finalize()  # episode 1 started in the previous rollout: headless, never used
    assert batch.episode.tolist() == [2, 2]


def test_ready_and_discard_select_episodes():
    buf = make_buffer(2, 3)
    episode = np.array([[0, 1, 2], [0, 1, 2]])
    term = np.array([[0, 0, 0], [1, 1, 1]], bool)
    fill(buf, episode, term, np.zeros_like(term), tag=0)
    batch = buf.finalize(ready=[1], discard=[2])
    assert batch.episode.tolist() == [1, 1]
    assert buf.num_pending_steps == 2  # episode 0 ended but is not ready (its group is incomplete): kept
    buf.reset()
    fill(buf, np.full((2, 3), -1), np.zeros((2, 3), bool), np.zeros((2, 3), bool), tag=1)  # steps of no episode
    assert buf.finalize(ready=[0]).episode.tolist() == [0, 0] and buf.num_pending_steps == 0


def test_never_ending_episode_raises_naming_the_time_limit():
    buf = make_buffer(4, 1, max_episode_steps=6)
    fill(buf, np.zeros((4, 1), int), np.zeros((4, 1), bool), np.zeros((4, 1), bool), tag=0)
    assert buf.finalize() is None
    buf.reset()
    fill(buf, np.zeros((4, 1), int), np.zeros((4, 1), bool), np.zeros((4, 1), bool), tag=1)
    with pytest.raises(RuntimeError, match=r"max_episode_steps=6.*TimeLimit"):
        buf.finalize()


def test_dict_observations_and_episode_minibatches():
    space = spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Discrete(4)})
    buf = EpisodeBuffer(3, space, spaces.Discrete(2), device="cpu", n_envs=2)
    for t in range(3):
        obs = {"a": np.full((2, 2), t, np.float32), "b": np.array([t, t])}
        buf.add(
            obs,
            np.zeros(2),
            np.ones(2),
            np.array([t == 2, t == 1]),
            np.zeros(2, bool),
            th.zeros(2),
            np.array([0, 1 if t < 2 else 2]),
        )
    batch = buf.finalize()
    assert set(batch.observations) == {"a", "b"} and batch.lengths.tolist() == [3, 2]
    lengths = th.tensor([3, 1, 4, 2])
    batches = episode_minibatches(lengths, batch_size=4, generator=th.Generator().manual_seed(0))
    steps = th.cat(batches).sort().values
    assert th.equal(steps, th.arange(10))  # every step once
    offsets = th.cumsum(lengths, 0) - lengths
    for b in batches:  # whole episodes only
        for e in range(4):
            inside = ((b >= offsets[e]) & (b < offsets[e] + lengths[e])).sum()
            assert int(inside) in (0, int(lengths[e]))


# ---------------------------------------------------------------------------------------------------- group seeding
class SeedEcho(gym.Env):
    """Observation = the seed of the episode's reset (or -1 for an unseeded reset); episodes of `length` steps."""

    observation_space = spaces.Box(-1, 2**31, (1,), np.float64)
    action_space = spaces.Discrete(2)

    def __init__(self, length: int = 3):
        self.length = length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.seed_ = 0, -1 if seed is None else seed
        return np.array([self.seed_], np.float64), {}

    def step(self, action):
        self.t += 1
        return np.array([self.seed_], np.float64), 1.0, self.t >= self.length, False, {}


def drive(env, slots, steps):
    """Run `steps` steps; return {episode: (group, set of observed seeds)}."""
    slots.prepare_reset(env)
    obs = env.reset()
    slots.after_reset(env)
    seen: dict[int, tuple[int, set]] = {}
    for _ in range(steps):
        for i in range(env.num_envs):
            if slots.episode[i] >= 0:
                seen.setdefault(int(slots.episode[i]), (int(slots.group[i]), set()))[1].add(float(obs[i][0]))
        obs, _, dones, infos = env.step(np.zeros(env.num_envs, dtype=int))
        _, round_end = slots.step(env, dones, infos)
        if round_end:
            slots.prepare_reset(env)
            obs = env.reset()
            slots.after_reset(env)
    return seen


@pytest.mark.parametrize(
    "make",
    [
        lambda: DummyVecEnv([lambda: SeedEcho(3)] * 3),
        lambda: VecNormalize(DummyVecEnv([lambda: SeedEcho(3)]), norm_obs=False),
        lambda: VecFrameStack(DummyVecEnv([lambda: SeedEcho(3)] * 2), n_stack=1),
        lambda: make_vec_env(
            lambda: SeedEcho(3),
            n_envs=3,
            vec_env_cls=SubprocVecEnv,
            wrapper_class=GroupResetWrapper,
            vec_env_kwargs=dict(start_method="fork"),
        ),
    ],
)
def test_every_member_of_a_group_starts_from_the_group_seed(make):
    env = make()
    sched = GroupScheduler(env.num_envs, group_size=4, seed=0)
    slots = SlotEpisodes(env.num_envs, sched)
    seen = drive(env, slots, 30)
    env.close()
    by_group: dict[int, set] = {}
    for group, seeds in seen.values():
        assert len(seeds) == 1 and -1 not in seeds  # every episode was reset from a seed
        by_group.setdefault(group, set()).update(seeds)
    assert len(by_group) >= 3
    assert all(len(s) == 1 for s in by_group.values())  # one seed per group
    assert len({next(iter(s)) for s in by_group.values()}) == len(by_group)  # and groups differ


def test_subproc_without_wrapper_falls_back_to_lockstep():
    env = SubprocVecEnv([lambda: SeedEcho(2), lambda: SeedEcho(3)], start_method="fork")
    slots = SlotEpisodes(2, GroupScheduler(2, group_size=2, seed=0))
    with pytest.warns(RuntimeWarning, match="lock-step"):
        seen = drive(env, slots, 12)
    env.close()
    assert slots.lockstep
    for _group, seeds in seen.values():
        assert len(seeds) == 1 and -1 not in seeds


def test_no_slot_waits_in_async_mode():
    env = DummyVecEnv([lambda: SeedEcho(1), lambda: SeedEcho(5)])  # very different episode lengths
    slots = SlotEpisodes(2, GroupScheduler(2, group_size=3, seed=0))
    drive(env, slots, 0)
    for _ in range(20):
        _, _, dones, infos = env.step(np.zeros(2, dtype=int))
        assert (slots.episode >= 0).all()
        slots.step(env, dones, infos)
