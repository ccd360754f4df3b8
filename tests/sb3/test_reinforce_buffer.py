"""EpisodicRolloutBuffer: Monte-Carlo returns on hand-made rollouts, complete episodes only, carry-over of tails."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from pg_extras import returns_to_go
from sb3_pg_extras.common import buffers as buffers_module
from sb3_pg_extras.common.buffers import EpisodicRolloutBuffer

OBS = spaces.Box(-np.inf, np.inf, (2,), np.float32)


def make_buffer(n_steps, n_envs, gamma=0.9, **kwargs):
    return EpisodicRolloutBuffer(n_steps, OBS, spaces.Discrete(3), device="cpu", gamma=gamma, n_envs=n_envs, **kwargs)


def fill(buf, rewards, terminated, truncated, tag, next_values=None):
    """Add a [T, N] rollout; observation = (tag, t) identifies each step."""
    T, N = rewards.shape
    for t in range(T):
        obs = np.stack([np.full(N, tag, np.float32), np.full(N, t, np.float32) + 100 * np.arange(N)], 1)
        nv = None if next_values is None else next_values[t]
        buf.add(obs, np.zeros(N), rewards[t], terminated[t], truncated[t], th.full((N,), -0.5), nv)


def used_steps(buf):
    """{(tag, t, env): G} of the steps the buffer hands out."""
    (batch,) = list(buf.get())
    obs = batch.observations.numpy()
    return {(int(o[0]), int(o[1]) % 100, int(o[1]) // 100): float(g) for o, g in zip(obs, batch.returns.numpy(), strict=True)}


def test_doctests():
    assert doctest.testmod(buffers_module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_returns_equal_core_and_only_complete_episodes():
    rng = np.random.default_rng(0)
    T, N = 7, 3
    rewards = rng.normal(size=(T, N)).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[2, 0] = True  # env 0: episode [0..2] complete, [3..6] incomplete
    truncated[1, 1] = True  # env 1: [0..1] truncated (complete), [2..5] terminated, [6] incomplete
    terminated[5, 1] = True
    # env 2: never ends -> nothing usable
    buf = make_buffer(T, N)
    buf.reset(np.ones(N, bool))
    fill(buf, rewards, terminated, truncated, tag=0)
    buf.compute_returns()

    expected = returns_to_go(th.as_tensor(rewards), th.as_tensor(terminated), th.as_tensor(truncated), gamma=0.9).numpy()
    usable = {(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1)}  # (t, env)
    got = used_steps(buf)
    assert {(t, e) for _, t, e in got} == usable
    for (_, t, e), g in got.items():
        assert g == pytest.approx(expected[t, e], abs=1e-5)
    # Independent hand computation of one value: env 1 steps 2..5, gamma 0.9, terminated at 5.
    r = rewards[2:6, 1]
    assert got[(0, 2, 1)] == pytest.approx(r[0] + 0.9 * r[1] + 0.81 * r[2] + 0.729 * r[3], abs=1e-5)
    assert buf.n_episodes == 3
    assert buf.n_usable == 9


def test_carry_over_completes_episode_across_rollouts():
    T, N = 4, 2
    buf = make_buffer(T, N, gamma=1.0)
    buf.reset(np.ones(N, bool))
    r1 = np.array([[1, 10], [2, 20], [3, 30], [4, 40]], np.float32)
    term1 = np.zeros((T, N), bool)
    term1[1, 0] = True  # env 0: episode [0,1] done, [2,3] continues; env 1: nothing ends
    fill(buf, r1, term1, np.zeros_like(term1), tag=1)
    buf.compute_returns()
    assert {(t, e) for _, t, e in used_steps(buf)} == {(0, 0), (1, 0)}

    buf.reset(np.zeros(N, bool))  # both envs continue their episodes
    assert buf.carried == 4 and buf.carried_steps == 2 + 4
    r2 = np.array([[5, 50], [6, 60], [7, 70], [8, 80]], np.float32)
    term2 = np.zeros((T, N), bool)
    term2[0, 0] = True  # env 0: the carried episode ends at the first step of rollout 2
    term2[2, 1] = True  # env 1: the 7-step episode ends at step 2
    fill(buf, r2, term2, np.zeros_like(term2), tag=2)
    buf.compute_returns()
    got = used_steps(buf)
    # env 0: carried steps (tag 1, t=2,3) + (tag 2, t=0): returns 3+4+5, 4+5, 5
    assert got[(1, 2, 0)] == pytest.approx(12.0)
    assert got[(1, 3, 0)] == pytest.approx(9.0)
    assert got[(2, 0, 0)] == pytest.approx(5.0)
    # env 1: whole 7-step episode, G_0 = 10+20+30+40+50+60+70
    assert got[(1, 0, 1)] == pytest.approx(280.0)
    assert got[(2, 2, 1)] == pytest.approx(70.0)
    # env 0 steps 1..3 of rollout 2 form an unfinished episode: not used
    assert all(not (tag == 2 and e == 0 and t >= 1) for tag, t, e in got)
    assert len(got) == 3 + 7
    # episode_starts mark the first step of each used episode
    (batch,) = list(buf.get())
    assert int(batch.episode_starts.sum()) == buf.n_episodes == 2


def test_no_carry_over_drops_split_episodes():
    T, N = 4, 1
    buf = make_buffer(T, N, gamma=1.0, carry_over=False)
    buf.reset(np.ones(N, bool))
    term = np.array([[False], [True], [False], [False]])
    fill(buf, np.ones((T, N), np.float32), term, np.zeros_like(term), tag=1)
    buf.compute_returns()
    buf.reset(np.zeros(N, bool))
    assert buf.carried_steps == 0
    term2 = np.array([[True], [False], [True], [False]])
    fill(buf, np.ones((T, N), np.float32), term2, np.zeros_like(term2), tag=2)
    buf.compute_returns()
    # the episode split by the boundary (tag1 t2..3 + tag2 t0) has no start here: only tag2 t1..2 is used
    assert set(used_steps(buf)) == {(2, 1, 0), (2, 2, 0)}


def test_headless_episode_not_used_and_reset_drops_tails():
    buf = make_buffer(3, 1, gamma=1.0)
    buf.reset(np.array([False]))  # e.g. after load(): the running episode's start was never seen
    fill(buf, np.ones((3, 1), np.float32), np.array([[False], [True], [False]]), np.zeros((3, 1), bool), tag=0)
    buf.compute_returns()
    assert buf.n_usable == 0
    buf.reset(np.array([True]))  # the env was reset: the kept tail must not be glued to the new episode
    assert buf.carried_steps == 0


def test_bootstrap_truncated_uses_next_values_only_at_truncations():
    buf = make_buffer(3, 1, gamma=0.5)
    buf.reset(np.array([True]))
    trunc = np.array([[False], [True], [False]])
    term = np.array([[False], [False], [True]])
    nv = np.array([[100.0], [8.0], [100.0]], np.float32)
    fill(buf, np.ones((3, 1), np.float32), term, trunc, tag=0, next_values=nv)
    buf.compute_returns(bootstrap_truncated=True)
    got = used_steps(buf)
    assert got[(0, 1, 0)] == pytest.approx(1 + 0.5 * 8.0)
    assert got[(0, 0, 0)] == pytest.approx(1 + 0.5 * 5.0)
    assert got[(0, 2, 0)] == pytest.approx(1.0)  # terminated: never bootstrapped
    buf.compute_returns(bootstrap_truncated=False)
    assert used_steps(buf)[(0, 0, 0)] == pytest.approx(1.5)


def test_max_carry_steps_error():
    buf = make_buffer(4, 1, max_carry_steps=6)
    buf.reset(np.array([True]))
    never_done = np.zeros((4, 1), bool)
    fill(buf, np.ones((4, 1), np.float32), never_done, never_done, tag=0)
    buf.reset(np.array([False]))  # 4 unfinished steps carried: fine
    fill(buf, np.ones((4, 1), np.float32), never_done, never_done, tag=1)
    with pytest.raises(RuntimeError, match=r"max_carry_steps=6.*TimeLimit"):
        buf.reset(np.array([False]))  # 8 unfinished steps > 6


def test_dict_observations_and_minibatches():
    space = spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Discrete(4)})
    buf = EpisodicRolloutBuffer(5, space, spaces.MultiBinary(3), device="cpu", gamma=1.0, n_envs=2)
    buf.reset(np.ones(2, bool))
    for t in range(5):
        done = np.array([t == 2, t == 4])
        buf.add(
            {"a": np.full((2, 2), t), "b": np.array([t % 4, 0])}, np.ones((2, 3)), np.ones(2), done, np.zeros(2), np.zeros(2)
        )
    buf.compute_returns()
    batches = list(buf.get(batch_size=3, shuffle=True))
    assert [len(b.returns) for b in batches] == [3, 3, 2]
    assert batches[0].observations["a"].shape[1:] == (2,)
    assert batches[0].actions.dtype == th.float32
    assert sorted(th.cat([b.returns for b in batches]).tolist()) == sorted([3.0, 2.0, 1.0, 5.0, 4.0, 3.0, 2.0, 1.0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="buffer_size"):
        make_buffer(0, 1)
    buf = make_buffer(2, 2)
    with pytest.raises(ValueError, match="episode_starts"):
        buf.reset(np.ones(3, bool))
    buf.reset()
    for _ in range(2):
        buf.add(np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))
    with pytest.raises(RuntimeError, match="reset"):
        buf.add(np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2))


def test_sample_draws_usable_steps_only():
    buf = make_buffer(4, 1, gamma=1.0)
    buf.reset(np.array([True]))
    with pytest.raises(RuntimeError, match="No usable step"):
        buf.sample(2)
    term = np.array([[False], [True], [False], [False]])
    fill(buf, np.ones((4, 1), np.float32), term, np.zeros_like(term), tag=0)
    buf.compute_returns()
    samples = buf.sample(50)
    assert set(samples.observations[:, 1].tolist()) <= {0.0, 1.0}
    assert set(samples.returns.tolist()) <= {1.0, 2.0}
