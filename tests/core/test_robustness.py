"""Property tests of the core's numerical robustness (DESIGN.md "Numerical robustness"; issue 10).

For every core function of the advantage / loss path, over extreme scales (1e-30 .. 1e30, float32 and float64),
mixed scales, empty and all-padding batches: the result is finite, or a ``ValueError`` that names the quantity;
never NaN. Group-relative advantages are invariant to the scale of the rewards over the whole range of the dtype.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pg_extras import (
    ADVANTAGE_MODES,
    ADVANTAGE_SCALES,
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    aggregate_loss,
    categorical_kl,
    clipped_surrogate_loss,
    complete_episode_mask,
    discounted_cumsum,
    gae,
    group_ids_from_size,
    group_normalize,
    group_relative_advantages,
    importance_ratio,
    kl_estimate,
    log_ratio,
    next_values_from_values,
    returns_to_go,
)

DTYPES = [torch.float32, torch.float64]
FAST = settings(max_examples=40, deadline=None)
#: words that a ValueError about a bad / overflowing quantity must contain (one of them)
QUANTITIES = ("rewards", "returns", "advantages", "values", "log_p", "log_q", "log_prob", "ratio", "KL", "loss", "sums", "x")


@st.composite
def extreme(draw, shape):
    """A tensor of ``shape``: random values at one scale 10^k (k in [-30, 30]), at mixed scales, or degenerate."""
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    kind = draw(st.sampled_from(["one_scale", "mixed", "constant", "zeros", "two_levels"]))
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "one_scale":
        x = base * 10.0 ** draw(st.integers(-30, 30))
    elif kind == "mixed":
        x = base * 10.0 ** torch.randint(-30, 31, shape, generator=g).to(torch.float64)
    elif kind == "constant":
        x = torch.full(shape, draw(st.sampled_from([1e-30, 1.0, 1e30, -1e30])), dtype=torch.float64)
    elif kind == "zeros":
        x = torch.zeros(shape, dtype=torch.float64)
    else:
        x = torch.where(base > 0, 1.0, 1.0 + 1e-7) * 10.0 ** draw(st.integers(-30, 30))
    return x.to(dtype)


@st.composite
def padded_batch(draw, allow_empty=True):
    """``(rewards [E, L], mask [E, L], group_ids [E], group_size)`` with whole groups of ``group_size``."""
    group_size = draw(st.integers(2, 4))
    n_groups = draw(st.integers(0 if allow_empty else 1, 3))
    L = draw(st.integers(0 if allow_empty else 1, 5))
    E = group_size * n_groups
    rewards = draw(extreme((E, L)))
    padding = draw(st.sampled_from(["lengths", "all_padding", "none"]))
    if padding == "lengths" and L > 0:
        lengths = torch.tensor(draw(st.lists(st.integers(0, L), min_size=E, max_size=E)), dtype=torch.long)
        mask = torch.arange(L)[None, :] < lengths[:, None]
    elif padding == "all_padding":
        mask = torch.zeros(E, L, dtype=torch.bool)
    else:
        mask = torch.ones(E, L, dtype=torch.bool)
    return rewards, mask, group_ids_from_size(E, group_size), group_size


def finite_or_named_error(fn, *args, **kwargs):
    """Call ``fn``; its tensor outputs must be finite, or it must raise a ValueError naming the quantity."""
    try:
        out = fn(*args, **kwargs)
    except ValueError as exc:
        message = str(exc)
        assert any(word in message for word in QUANTITIES), message
        assert "nan" not in message.split("(")[0].lower(), message
        return None
    outputs = out if isinstance(out, tuple) else (out,)
    for o in outputs:
        if isinstance(o, torch.Tensor) and o.is_floating_point():
            assert torch.isfinite(o).all(), (fn.__name__, o)
    return out


# -- group-relative advantages ----------------------------------------------------------------------------------------


@FAST
@given(
    batch=padded_batch(),
    mode=st.sampled_from(ADVANTAGE_MODES),
    scale=st.sampled_from(ADVANTAGE_SCALES),
    rloo=st.booleans(),
    gamma=st.sampled_from([0.0, 0.5, 0.99, 1.0]),
)
def test_group_relative_advantages_finite_or_clear_error(batch, mode, scale, rloo, gamma):
    rewards, mask, gid, _ = batch
    out = finite_or_named_error(
        group_relative_advantages, rewards, mask, group_ids=gid, mode=mode, scale=scale, rloo=rloo, gamma=gamma
    )
    if out is not None:
        assert out.advantages.shape == rewards.shape and out.advantages.dtype == rewards.dtype
        assert (out.advantages[~mask] == 0).all()
        assert 0.0 <= out.frac_zero_std_groups <= 1.0
        assert math.isfinite(out.group_return_std) and out.group_return_std >= 0.0
        if scale == "group":  # normalised by the group std: bounded by the group size and the episode length
            assert (out.advantages.abs() <= 100.0).all()


@FAST
@given(values=extreme((6, 2)), scale=st.sampled_from(ADVANTAGE_SCALES), rloo=st.booleans(), data=st.data())
def test_group_normalize_finite_or_clear_error(values, scale, rloo, data):
    valid = torch.tensor(data.draw(st.lists(st.booleans(), min_size=12, max_size=12))).reshape(6, 2)
    gid = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=6, max_size=6)))
    out = finite_or_named_error(group_normalize, values, gid, valid, scale, rloo)
    if out is not None:
        normalised, zero = out
        assert (normalised[~valid] == 0).all()
        assert zero.dtype == torch.bool


def _normal_rewards(seed, shape, dtype):
    """Rewards with ``0.1 <= |r| <= ~5``: their products with any factor of the tested range stay normal numbers."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    return (torch.sign(r) * (0.1 + r.abs().clamp(max=5.0))).to(dtype)


def _factor_range(dtype, length):
    """log2 of the factors c for which c * rewards (and their discounted sums) stay finite and normal."""
    info = torch.finfo(dtype)
    low = math.ceil(math.log2(1000 * info.tiny / 0.1))
    high = math.floor(math.log2(info.max / (64 * 6.0 * length)))
    return low, high


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(["outcome", "return_to_go"]),
    rloo=st.booleans(),
    gamma=st.sampled_from([0.5, 0.9, 1.0]),
    position=st.floats(0.0, 1.0),
    mantissa=st.floats(1.0, 2.0),
    lengths=st.lists(st.integers(1, 5), min_size=6, max_size=6),
)
def test_advantages_invariant_to_the_reward_scale_over_the_whole_range(
    dtype, seed, mode, rloo, gamma, position, mantissa, lengths
):
    L = max(lengths)
    rewards = _normal_rewards(seed, (6, L), dtype)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    low, high = _factor_range(dtype, L)
    k = round(low + position * (high - low))
    base = group_relative_advantages(rewards, mask, group_size=3, mode=mode, rloo=rloo, gamma=gamma).advantages
    # a power of two: exactly the same advantages, from near the smallest normal number to near the largest
    exact = group_relative_advantages(rewards * 2.0**k, mask, group_size=3, mode=mode, rloo=rloo, gamma=gamma).advantages
    assert torch.equal(exact, base), (k, (exact - base).abs().max())
    # any factor: the same up to rounding
    c = mantissa * 2.0 ** min(k, high - 1)
    scaled = group_relative_advantages(rewards * c, mask, group_size=3, mode=mode, rloo=rloo, gamma=gamma).advantages
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(scaled, base, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exponent", [-30, -20, -8, 0, 8, 20, 30])
def test_outcome_advantages_at_every_decade(dtype, exponent):
    r = torch.tensor([[1.0], [3.0], [2.0], [2.0]], dtype=torch.float64) * 10.0**exponent
    out = group_relative_advantages(r.to(dtype), torch.ones(4, 1, dtype=torch.bool), group_size=2)
    expected = torch.tensor([-1.0, 1.0, 0.0, 0.0], dtype=dtype) / math.sqrt(2)
    expected[2:] = 0.0
    torch.testing.assert_close(out.advantages[:, 0], expected)
    assert out.frac_zero_std_groups == 0.5


# -- returns and GAE --------------------------------------------------------------------------------------------------


@FAST
@given(
    rewards=extreme((7, 3)),
    seed=st.integers(0, 2**16),
    gamma=st.sampled_from([0.0, 0.9, 1.0]),
    lam=st.sampled_from([0.0, 0.95, 1.0]),
    T=st.integers(0, 7),
)
def test_returns_and_gae_finite_or_clear_error(rewards, seed, gamma, lam, T):
    g = torch.Generator().manual_seed(seed)
    rewards = rewards[:T]
    terminated = torch.rand(rewards.shape, generator=g) < 0.3
    truncated = (torch.rand(rewards.shape, generator=g) < 0.2) & ~terminated
    values = rewards.flip(-1) * 0.5  # critic values at the rewards' scale
    last = torch.zeros(rewards.shape[1:], dtype=rewards.dtype)
    nv = next_values_from_values(values, last, values, truncated)
    assert nv.shape == rewards.shape
    finite_or_named_error(discounted_cumsum, rewards, gamma, terminated | truncated)
    finite_or_named_error(returns_to_go, rewards, terminated, truncated, gamma)
    finite_or_named_error(returns_to_go, rewards, terminated, truncated, gamma, nv)
    finite_or_named_error(gae, rewards, values, nv, terminated, truncated, gamma, lam)
    assert complete_episode_mask(terminated | truncated).shape == rewards.shape


# -- surrogate, aggregation, KL ---------------------------------------------------------------------------------------


@FAST
@given(logp=extreme((3, 4)), data=st.data(), clip=st.sampled_from([None, 0.2]), mode=st.sampled_from(LOSS_AGGREGATIONS))
def test_surrogate_and_aggregation_finite_or_clear_error(logp, data, clip, mode):
    old = data.draw(extreme((3, 4))).to(logp.dtype)
    adv = data.draw(extreme((3, 4))).to(logp.dtype)
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=12, max_size=12))).reshape(3, 4)
    logp = logp.clone().requires_grad_(True)
    out = finite_or_named_error(clipped_surrogate_loss, logp, old, adv, clip)
    if out is not None:
        loss = finite_or_named_error(aggregate_loss, out[0], mask, mode)
        if loss is not None:
            loss.backward()
            assert torch.isfinite(logp.grad).all()
    # the trial-point functions never raise on log_prob and never give NaN for finite inputs
    assert not torch.isnan(importance_ratio(logp.detach(), old)).any()
    assert not torch.isnan(log_ratio(logp.detach(), old)).any()


@FAST
@given(shape=st.sampled_from([(0, 0), (0, 4), (3, 0), (0,)]), mode=st.sampled_from(LOSS_AGGREGATIONS))
def test_aggregation_of_empty_batches_is_zero(shape, mode):
    loss = torch.zeros(shape, requires_grad=True)
    out = aggregate_loss(loss, torch.zeros(shape, dtype=torch.bool), mode)
    assert out.item() == 0.0
    out.backward()


@FAST
@given(log_p=extreme((5,)), data=st.data(), estimator=st.sampled_from(KL_ESTIMATORS))
def test_kl_estimate_finite_or_clear_error(log_p, data, estimator):
    log_q = data.draw(extreme((5,))).to(log_p.dtype)
    out = finite_or_named_error(kl_estimate, log_p, log_q, estimator)
    if out is not None and estimator != "k1":
        assert (out >= 0).all()


@FAST
@given(logits_p=extreme((3, 4)), data=st.data())
def test_categorical_kl_never_nan(logits_p, data):
    logits_q = data.draw(extreme((3, 4))).to(logits_p.dtype)
    kl = categorical_kl(torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1))
    assert not torch.isnan(kl).any() and (kl >= -1e-6).all()
