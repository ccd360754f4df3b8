"""Returns-to-go and GAE against a plain Python reference (seed 2.1; Schulman et al. 2016)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pg_extras import complete_episode_mask, discounted_cumsum, gae, next_values_from_values, returns_to_go


def ref_returns(rewards, terminated, truncated, gamma, next_values):
    T, N = rewards.shape
    out = torch.zeros_like(rewards)
    for n in range(N):
        g = 0.0
        for t in reversed(range(T)):
            if terminated[t, n]:
                g = rewards[t, n].item()
            elif truncated[t, n] or t == T - 1:
                boot = 0.0 if next_values is None else next_values[t, n].item()
                g = rewards[t, n].item() + gamma * boot
            else:
                g = rewards[t, n].item() + gamma * g
            out[t, n] = g
    return out


def ref_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    T, N = rewards.shape
    adv = torch.zeros_like(rewards)
    for n in range(N):
        a = 0.0
        for t in reversed(range(T)):
            nv = 0.0 if terminated[t, n] else next_values[t, n].item()
            delta = rewards[t, n].item() + gamma * nv - values[t, n].item()
            if terminated[t, n] or truncated[t, n] or t == T - 1:
                a = delta
            else:
                a = delta + gamma * lam * a
            adv[t, n] = a
    return adv


def random_rollout(T, N, seed, p_term=0.08, p_trunc=0.05):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    terminated = torch.rand(T, N, generator=g) < p_term
    truncated = (torch.rand(T, N, generator=g) < p_trunc) & ~terminated
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    last = torch.randn(N, generator=g, dtype=torch.float64)
    final = torch.randn(T, N, generator=g, dtype=torch.float64)
    return rewards, terminated, truncated, values, last, final


@pytest.mark.parametrize("T,N", [(1, 1), (7, 3), (128, 2), (129, 2), (300, 5)])
@pytest.mark.parametrize("bootstrap", [False, True])
def test_returns_to_go_matches_reference(T, N, bootstrap):
    rewards, terminated, truncated, values, last, final = random_rollout(T, N, seed=T * 10 + N)
    nv = next_values_from_values(values, last, final, truncated) if bootstrap else None
    ours = returns_to_go(rewards, terminated, truncated, gamma=0.97, next_values=nv)
    torch.testing.assert_close(ours, ref_returns(rewards, terminated, truncated, 0.97, nv))


@pytest.mark.parametrize("T,N", [(1, 1), (50, 4), (260, 3)])
def test_gae_matches_reference(T, N):
    rewards, terminated, truncated, values, last, final = random_rollout(T, N, seed=T + N)
    nv = next_values_from_values(values, last, final, truncated)
    adv, ret = gae(rewards, values, nv, terminated, truncated, gamma=0.99, gae_lambda=0.9)
    expected = ref_gae(rewards, values, nv, terminated, truncated, 0.99, 0.9)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_gae_lambda_one_is_mc_return_minus_value():
    rewards, terminated, truncated, values, last, final = random_rollout(40, 3, seed=1)
    nv = next_values_from_values(values, last, final, truncated)
    adv, _ = gae(rewards, values, nv, terminated, truncated, gamma=0.95, gae_lambda=1.0)
    mc = returns_to_go(rewards, terminated, truncated, gamma=0.95, next_values=nv)
    torch.testing.assert_close(adv, mc - values)


def test_truncation_bootstraps_termination_does_not():
    rewards = torch.ones(3, 2)
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, True], [False, False]])
    nv = torch.full((3, 2), 10.0)
    g = returns_to_go(rewards, terminated, truncated, gamma=0.5, next_values=nv)
    assert g[1, 0] == 1.0  # terminated: no bootstrap
    assert g[1, 1] == 1.0 + 0.5 * 10.0  # truncated: bootstrap
    assert g[0, 0] == 1.5 and g[0, 1] == 1.0 + 0.5 * 6.0
    assert g[2, 0] == 6.0  # rollout end: bootstrap with next value
    no_boot = returns_to_go(rewards, terminated, truncated, gamma=0.5)
    assert no_boot[1, 1] == 1.0 and no_boot[2, 0] == 1.0


def test_flat_layout_and_extra_batch_dims():
    rewards = torch.randn(20, 2, 3, dtype=torch.float64)
    done = torch.rand(20, 2, 3) < 0.2
    ours = discounted_cumsum(rewards, 0.9, done)
    flat = discounted_cumsum(rewards.reshape(20, 6), 0.9, done.reshape(20, 6)).reshape(20, 2, 3)
    torch.testing.assert_close(ours, flat)
    one = discounted_cumsum(rewards[:, 0, 0], 0.9, done[:, 0, 0])
    torch.testing.assert_close(one, ours[:, 0, 0])


def test_complete_episode_mask():
    done = torch.tensor([[False, False], [True, False], [False, True], [False, False]])
    expected = torch.tensor([[True, True], [True, True], [False, True], [False, False]])
    assert torch.equal(complete_episode_mask(done), expected)


def test_bad_arguments_name_the_argument():
    r = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="terminated"):
        returns_to_go(r, torch.zeros(5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="gamma"):
        returns_to_go(r, torch.zeros(5, 2, dtype=torch.bool), gamma=1.5)
    with pytest.raises(ValueError, match="gae_lambda"):
        gae(r, r, r, torch.zeros(5, 2, dtype=torch.bool), gae_lambda=-0.1)
    with pytest.raises(ValueError, match="rewards"):
        returns_to_go(torch.full((5, 2), float("nan")), torch.zeros(5, 2, dtype=torch.bool))


@settings(max_examples=40, deadline=None)
@given(
    T=st.integers(1, 40),
    N=st.integers(1, 4),
    gamma=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
    chunk=st.integers(1, 16),
)
def test_discounted_cumsum_property(T, N, gamma, seed, chunk):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, generator=g, dtype=torch.float64)
    done = torch.rand(T, N, generator=g) < 0.3
    ours = discounted_cumsum(x, gamma, done, chunk=chunk)
    ref = ref_returns(x, done, torch.zeros_like(done), gamma, None)
    # ref treats the rollout end as a cut with no bootstrap, like discounted_cumsum
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref)


# -- numerical robustness (issue 10) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0), (0, 2, 3)])
def test_empty_inputs_give_empty_outputs(shape):
    x = torch.zeros(shape)
    done = torch.zeros(shape, dtype=torch.bool)
    assert discounted_cumsum(x, 0.9, done).shape == shape
    assert returns_to_go(x, done).shape == shape
    assert returns_to_go(x, done, done, next_values=x).shape == shape
    adv, ret = gae(x, x, x, done, done)
    assert adv.shape == shape and ret.shape == shape


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_gae_with_non_finite_values_raises_naming_values(bad):
    r = torch.zeros(4, 2)
    done = torch.zeros(4, 2, dtype=torch.bool)
    values = torch.zeros(4, 2)
    values[2, 1] = bad
    with pytest.raises(ValueError, match=r"^values has non-finite.*critic"):
        gae(r, values, torch.zeros(4, 2), done)
    with pytest.raises(ValueError, match=r"^next_values has non-finite.*critic"):
        gae(r, torch.zeros(4, 2), values, done)
    with pytest.raises(ValueError, match=r"^next_values has non-finite"):
        returns_to_go(r, done, next_values=values.roll(1, 0))  # read at the last step


def test_next_values_are_not_read_where_they_do_not_matter():
    r = torch.ones(3)
    terminated = torch.tensor([False, True, False])
    nv = torch.tensor([0.0, float("nan"), 2.0])  # NaN at the terminated step: ignored by the maths
    adv, _ = gae(r, torch.zeros(3), nv, terminated, gamma=1.0, gae_lambda=1.0)
    torch.testing.assert_close(adv, torch.tensor([2.0, 1.0, 3.0]))
    nv = torch.tensor([float("nan"), 0.0, 2.0])  # not a truncation nor the last step: not read
    torch.testing.assert_close(returns_to_go(r, terminated, gamma=1.0, next_values=nv), torch.tensor([2.0, 1.0, 3.0]))


def test_overflowing_returns_and_advantages_raise_naming_the_quantity():
    r = torch.full((5, 2), 1e38)
    done = torch.zeros(5, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^returns overflow.*rewards are finite.*VecNormalize"):
        returns_to_go(r, done, gamma=1.0)
    with pytest.raises(ValueError, match=r"^advantages overflow.*VecNormalize"):
        gae(r, torch.zeros(5, 2), torch.zeros(5, 2), done, gamma=1.0, gae_lambda=1.0)
    with pytest.raises(ValueError, match=r"^discounted sums overflow"):
        discounted_cumsum(r, 1.0)
    with pytest.raises(ValueError, match=r"^x has non-finite"):
        discounted_cumsum(torch.tensor([1.0, float("inf")]), 0.5)
    # large but representable: fine
    assert torch.isfinite(returns_to_go(torch.full((3,), 1e38), torch.zeros(3, dtype=torch.bool), gamma=1.0)).all()


def test_integer_rewards_are_discounted_in_floating_point():
    # an int64 tensor used to be discounted with integer powers (0.5 ** k -> 0)
    out = discounted_cumsum(torch.tensor([1, 1, 1]), 0.5)
    torch.testing.assert_close(out, torch.tensor([1.75, 1.5, 1.0]))
    g = returns_to_go(torch.tensor([1, 1]), torch.tensor([False, True]), gamma=0.5)
    torch.testing.assert_close(g, torch.tensor([1.5, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_returns_scale_with_the_rewards(dtype, scale):
    rewards, terminated, truncated, *_ = random_rollout(40, 3, seed=7)
    base = returns_to_go(rewards.to(dtype), terminated, truncated, gamma=0.9)
    scaled = returns_to_go(rewards.to(dtype) * scale, terminated, truncated, gamma=0.9)
    torch.testing.assert_close(scaled / scale, base, rtol=1e-5, atol=1e-6)


def test_episode_returns_are_the_discounted_sums_of_each_episode():
    from pg_extras import episode_returns

    torch.manual_seed(0)
    lengths, gamma = [3, 1, 5], 0.9
    rewards = torch.randn(sum(lengths), dtype=torch.float64)
    done = torch.zeros(sum(lengths), dtype=torch.bool)
    done[torch.tensor(lengths).cumsum(0) - 1] = True
    expected, start = [], 0
    for n in lengths:
        expected.append(sum(gamma**t * float(rewards[start + t]) for t in range(n)))
        start += n
    torch.testing.assert_close(episode_returns(rewards, done, gamma=gamma), torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(ValueError, match="last step"):
        episode_returns(rewards, torch.zeros_like(done))
