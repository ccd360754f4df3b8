"""Group-relative advantages (DESIGN.md "GRPO"; seed 2.6) and the episode layout."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pg_extras import EpisodeLayout, group_normalize, group_relative_advantages


def padded(lengths, rewards_per_episode):
    L = max(lengths)
    r = torch.zeros(len(lengths), L, dtype=torch.float64)
    m = torch.zeros(len(lengths), L, dtype=torch.bool)
    for i, (n, rs) in enumerate(zip(lengths, rewards_per_episode, strict=True)):
        r[i, :n] = torch.tensor(rs, dtype=torch.float64)
        m[i, :n] = True
    return r, m


def test_outcome_hand_computed():
    # group 0: returns 3 and 1 (mean 2, unbiased std sqrt(2)); group 1: returns 0, 2, 4 (mean 2, std 2)
    r, m = padded([3, 1, 1, 2, 4], [[1, 1, 1], [1], [0], [1, 1], [1, 1, 1, 1]])
    out = group_relative_advantages(r, m, group_ids=torch.tensor([0, 0, 1, 1, 1]))
    s2 = math.sqrt(2.0)
    expected = torch.tensor(
        [[1 / s2] * 3 + [0], [-1 / s2, 0, 0, 0], [-1.0, 0, 0, 0], [0.0, 0, 0, 0], [1.0] * 4], dtype=torch.float64
    )
    torch.testing.assert_close(out.advantages, expected, atol=1e-6, rtol=1e-6)
    assert out.frac_zero_std_groups == 0.0


def test_scales_and_rloo_hand_computed():
    values = torch.tensor([1.0, 2.0, 6.0, 10.0, 10.0], dtype=torch.float64)
    gid = torch.tensor([0, 0, 0, 1, 1])
    none, zero = group_normalize(values, gid, scale="none")
    torch.testing.assert_close(none, torch.tensor([-2.0, -1.0, 3.0, 0.0, 0.0], dtype=torch.float64))
    assert zero.squeeze(1).tolist() == [False, True]
    batch, _ = group_normalize(values, gid, scale="batch", eps=0.0)
    torch.testing.assert_close(batch, none / values.std())
    loo, _ = group_normalize(values, gid, scale="none", rloo=True)
    # r_i - mean of the others: 1 - 4, 2 - 3.5, 6 - 1.5
    torch.testing.assert_close(loo, torch.tensor([-3.0, -1.5, 4.5, 0.0, 0.0], dtype=torch.float64))


def test_zero_std_group_gives_zero_not_nan():
    r, m = padded([2, 2, 1], [[1, 1], [1, 1], [5]])
    for scale in ("group", "batch", "none"):
        for rloo in (False, True):
            out = group_relative_advantages(r, m, group_ids=torch.tensor([0, 0, 1]), scale=scale, rloo=rloo)
            assert torch.isfinite(out.advantages).all()
            assert torch.equal(out.advantages, torch.zeros_like(r))
    assert out.frac_zero_std_groups == 1.0


def test_process_mode_hand_computed_and_constant_reward_gives_zero():
    # one group, step rewards [1, 0] and [0]: mean 1/3, unbiased std sqrt(1/3)
    r, m = padded([2, 1], [[1, 0], [0]])
    out = group_relative_advantages(r, m, group_size=2, mode="process", eps=0.0)
    mu, sd = 1 / 3, math.sqrt(1 / 3)
    n1, n0 = (1 - mu) / sd, (0 - mu) / sd
    expected = torch.tensor([[n1 + n0, n0], [n0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.advantages, expected)
    # constant per-step reward (CartPole): zero signal (DESIGN.md)
    r, m = padded([3, 1], [[1, 1, 1], [1]])
    assert torch.equal(group_relative_advantages(r, m, group_size=2, mode="process").advantages, torch.zeros_like(r))


def test_return_to_go_mode_uses_members_still_running():
    # G_{i,t} with gamma = 1: ep0 [3, 2, 1], ep1 [1], ep2 [2, 1]
    r, m = padded([3, 1, 2], [[1, 1, 1], [1], [1, 1]])
    out = group_relative_advantages(r, m, group_size=3, mode="return_to_go", scale="none")
    # t=0: mean(3,1,2)=2 -> [1,-1,0]; t=1: members 0,2: mean(2,1)=1.5 -> [0.5, -, -0.5]; t=2: only ep0 -> zero spread
    expected = torch.tensor([[1.0, 0.5, 0.0], [-1.0, 0.0, 0.0], [0.0, -0.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.advantages, expected)


def test_bad_arguments():
    r, m = padded([1, 1, 1], [[1], [2], [3]])
    with pytest.raises(ValueError, match="group_size"):
        group_relative_advantages(r, m, group_size=2)
    with pytest.raises(ValueError, match="mode"):
        group_relative_advantages(r, m, group_size=3, mode="bogus")
    with pytest.raises(ValueError, match="scale"):
        group_relative_advantages(r, m, group_size=3, scale="bogus")
    with pytest.raises(ValueError, match="mask"):
        group_relative_advantages(r, m[:, :0], group_size=3)
    with pytest.raises(ValueError, match="group_ids"):
        group_normalize(torch.ones(3), torch.tensor([0, 1]))


@st.composite
def grouped_batch(draw):
    n_groups = draw(st.integers(1, 4))
    sizes = [draw(st.integers(1, 5)) for _ in range(n_groups)]
    lengths = [draw(st.integers(1, 6)) for _ in range(sum(sizes))]
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    rewards = torch.randn(len(lengths), L, generator=g, dtype=torch.float64)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    gid = torch.repeat_interleave(torch.arange(n_groups), torch.tensor(sizes))
    perm = torch.randperm(len(lengths), generator=g)  # groups need not be contiguous
    return rewards[perm], mask[perm], gid[perm]


@settings(max_examples=60, deadline=None)
@given(
    batch=grouped_batch(),
    mode=st.sampled_from(["outcome", "process", "return_to_go"]),
    scale=st.sampled_from(["group", "batch", "none"]),
    rloo=st.booleans(),
)
def test_shapes_masks_finite(batch, mode, scale, rloo):
    rewards, mask, gid = batch
    out = group_relative_advantages(rewards, mask, group_ids=gid, mode=mode, scale=scale, rloo=rloo)
    assert out.advantages.shape == rewards.shape
    assert torch.isfinite(out.advantages).all()
    assert (out.advantages[~mask] == 0).all()
    assert 0.0 <= out.frac_zero_std_groups <= 1.0
    # padding content must not matter
    noisy = torch.where(mask, rewards, torch.full_like(rewards, 123.0))
    out2 = group_relative_advantages(noisy, mask, group_ids=gid, mode=mode, scale=scale, rloo=rloo)
    torch.testing.assert_close(out.advantages, out2.advantages)


@settings(max_examples=60, deadline=None)
@given(batch=grouped_batch(), shift=st.floats(-50, 50), factor=st.floats(0.1, 20), rloo=st.booleans())
def test_outcome_group_scale_invariant_to_shift_and_scale(batch, shift, factor, rloo):
    rewards, mask, gid = batch
    base = group_relative_advantages(rewards, mask, group_ids=gid, rloo=rloo, eps=1e-12).advantages
    # shift every episode's outcome by the same constant: add it to the last valid step's reward
    last = mask.sum(1) - 1
    shifted = rewards.clone()
    shifted[torch.arange(len(last)), last] += shift
    out = group_relative_advantages(shifted * factor, mask, group_ids=gid, rloo=rloo, eps=1e-12).advantages
    torch.testing.assert_close(out, base, atol=1e-6, rtol=1e-5)


def test_group_mean_of_advantages_is_zero():
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(12, 5, generator=g, dtype=torch.float64)
    mask = torch.ones_like(rewards, dtype=torch.bool)
    adv = group_relative_advantages(rewards, mask, group_size=4).advantages[:, 0]
    torch.testing.assert_close(adv.reshape(3, 4).mean(1), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(adv.reshape(3, 4).std(1), torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=1e-6)


def test_episode_layout_round_trip():
    g = torch.Generator().manual_seed(0)
    done = torch.rand(30, 4, generator=g) < 0.2
    layout = EpisodeLayout.from_dones(done)
    x = torch.randn(30, 4, 3, generator=g)
    ep = layout.to_episodes(x)
    assert ep.shape == (layout.num_episodes, layout.max_length, 3)
    torch.testing.assert_close(layout.to_steps(ep), x)
    assert int(layout.lengths.sum()) == 30 * 4
    # an episode is complete iff its last step is done
    for e in range(layout.num_episodes):
        env, start, n = int(layout.env_index[e]), int(layout.start_step[e]), int(layout.lengths[e])
        assert bool(layout.complete[e]) == bool(done[start + n - 1, env])
        assert not done[start : start + n - 1, env].any()


# -- numerical robustness (issue 10) ---------------------------------------------------------------------------------


def one_step(values, dtype):
    r = torch.tensor(values, dtype=dtype)[:, None]
    return r, torch.ones_like(r, dtype=torch.bool)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_rewards_give_the_same_advantages_as_unit_rewards(dtype):
    r, m = one_step([1e-8, 3e-8], dtype)
    out = group_relative_advantages(r, m, group_size=2)
    torch.testing.assert_close(out.advantages[:, 0], torch.tensor([-1, 1], dtype=dtype) / math.sqrt(2))
    assert out.frac_zero_std_groups == 0.0
    unit = group_relative_advantages(*one_step([1.0, 3.0], dtype), group_size=2).advantages
    torch.testing.assert_close(out.advantages, unit)


def test_near_ties_are_ties_only_below_the_dtype_resolution():
    # 1000 vs 1000.001: a real difference in float64 (and in float32, where 0.001 is ~16 ulps of 1000)
    for dtype in (torch.float32, torch.float64):
        out = group_relative_advantages(*one_step([1000.0, 1000.001], dtype), group_size=2)
        assert out.frac_zero_std_groups == 0.0
        assert out.advantages[0, 0] < -0.69 and out.advantages[1, 0] > 0.69
    # 1000 vs 1000.00001 is below float32's resolution (identical after rounding), not below float64's
    tie = group_relative_advantages(*one_step([1000.0, 1000.00001], torch.float32), group_size=2)
    assert tie.frac_zero_std_groups == 1.0 and torch.equal(tie.advantages, torch.zeros(2, 1))
    real = group_relative_advantages(*one_step([1000.0, 1000.00001], torch.float64), group_size=2)
    assert real.frac_zero_std_groups == 0.0 and real.advantages[1, 0] > 0.0
    # values that differ by one unit in the last place are a tie
    x = torch.tensor(1000.0, dtype=torch.float64)
    ulp = torch.nextafter(x, torch.tensor(2000.0, dtype=torch.float64))
    noise = group_normalize(torch.stack([x, ulp]), torch.tensor([0, 0]))
    assert bool(noise[1].all()) and torch.equal(noise[0], torch.zeros(2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", ["group", "batch"])
def test_huge_finite_returns_do_not_overflow_the_statistics(dtype, scale):
    r, m = one_step([1e20, 3e20], dtype)
    out = group_relative_advantages(r, m, group_size=2, scale=scale)
    torch.testing.assert_close(out.advantages[:, 0], torch.tensor([-1, 1], dtype=dtype) / math.sqrt(2))
    assert math.isfinite(out.group_return_std)
    assert out.group_return_std == pytest.approx(math.sqrt(2) * 1e20, rel=1e-5)
    # close to the largest float: the square of a value overflows, the statistics must not
    big = torch.finfo(dtype).max / 4
    out = group_relative_advantages(*one_step([big, -big, big / 2], dtype), group_size=3, scale=scale)
    assert torch.isfinite(out.advantages).all() and out.frac_zero_std_groups == 0.0
    assert out.advantages[0, 0] > 0 > out.advantages[1, 0]


@pytest.mark.parametrize("mode", ["outcome", "return_to_go"])
def test_returns_that_overflow_raise_naming_the_quantity_and_the_fix(mode):
    rewards = torch.full((2, 5), 1e38)
    rewards[1] *= 2
    mask = torch.ones_like(rewards, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"returns.*overflow.*VecNormalize"):
        group_relative_advantages(rewards, mask, group_size=2, mode=mode)


def test_scale_none_advantages_that_overflow_raise():
    big = torch.finfo(torch.float32).max * 0.9
    r, m = one_step([big, -big, -big], torch.float32)
    with pytest.raises(ValueError, match=r"overflow.*scale='group'"):
        group_relative_advantages(r, m, group_size=3, scale="none")
    # the same group with scale='group' is fine
    assert torch.isfinite(group_relative_advantages(r, m, group_size=3).advantages).all()


def test_group_size_must_compare_at_least_two_episodes():
    r, m = one_step([1.0, 2.0], torch.float64)
    with pytest.raises(ValueError, match=r"group_size=1.*>= 2.*two episodes"):
        group_relative_advantages(r, m, group_size=1)
    for bad in (True, 2.5, "2"):
        with pytest.raises(ValueError, match="group_size"):
            group_relative_advantages(r, m, group_size=bad)


def test_group_with_one_valid_episode_gets_zero_and_is_counted():
    r = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    m = torch.tensor([[True], [False], [True], [True]])
    for rloo in (False, True):
        out = group_relative_advantages(r, m, group_size=2, rloo=rloo)
        assert out.advantages[0, 0] == 0.0 and out.advantages[1, 0] == 0.0
        assert out.advantages[3, 0] > 0 > out.advantages[2, 0]
        assert out.frac_zero_std_groups == 0.5


def test_empty_batch_and_float_group_ids():
    out = group_relative_advantages(
        torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool), group_ids=torch.zeros(0, dtype=torch.long)
    )
    assert out.advantages.shape == (0, 3) and out.frac_zero_std_groups == 0.0 and out.group_return_std == 0.0
    with pytest.raises(ValueError, match="group_ids must be integer"):
        group_normalize(torch.ones(2), torch.tensor([0.0, 0.7]))


def test_non_finite_valid_values_raise_and_padding_is_ignored():
    values = torch.tensor([1.0, float("nan"), 3.0])
    with pytest.raises(ValueError, match="values has non-finite"):
        group_normalize(values, torch.tensor([0, 0, 0]))
    out, _ = group_normalize(values, torch.tensor([0, 0, 0]), valid=torch.tensor([True, False, True]))
    torch.testing.assert_close(out, torch.tensor([-1, 0, 1]) / math.sqrt(2))


def test_integer_rewards_are_promoted():
    r = torch.tensor([[1, 1], [3, 0]])
    out = group_relative_advantages(r, torch.ones_like(r, dtype=torch.bool), group_size=2, gamma=0.5)
    assert out.advantages.is_floating_point()
    torch.testing.assert_close(out.advantages[:, 0], torch.tensor([-1.0, 1.0]) / math.sqrt(2))
