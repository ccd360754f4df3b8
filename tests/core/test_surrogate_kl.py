"""Clipped surrogate, loss aggregation (seed 2.5, 2.6) and KL estimators."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch.distributions import Categorical, Normal

from pg_extras import aggregate_loss, clipped_surrogate_loss, exact_kl, importance_ratio, kl_estimate


def test_clipped_surrogate_against_formula():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(200, generator=g, dtype=torch.float64) * 0.3
    old = torch.randn(200, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(200, generator=g, dtype=torch.float64)
    for lo, hi in [(0.2, None), (0.2, 0.28), (0.1, 0.5)]:
        loss, clipped = clipped_surrogate_loss(logp, old, adv, lo, hi)
        ratio = torch.exp(logp - old)
        high = lo if hi is None else hi
        expected = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - lo, 1 + high) * adv)
        torch.testing.assert_close(loss, expected)
        assert torch.equal(clipped, (ratio < 1 - lo) | (ratio > 1 + high))
    loss, _ = clipped_surrogate_loss(logp, old, adv, None)
    torch.testing.assert_close(loss, -importance_ratio(logp, old) * adv)


def test_clip_gradient_vanishes_outside_the_trust_region():
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    loss, _ = clipped_surrogate_loss(logp, torch.zeros(4, dtype=torch.float64), adv, 0.2)
    loss.sum().backward()
    # ratio 1.5 with A>0 and ratio 0.5 with A<0 are clipped (no gradient); the pessimistic ones keep theirs
    assert logp.grad[0] == 0 and logp.grad[3] == 0
    assert logp.grad[1] != 0 and logp.grad[2] != 0


def test_aggregation_modes_hand_computed():
    loss = torch.tensor([[1.0, 2.0, 3.0], [6.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert aggregate_loss(loss, mask, "grpo") == pytest.approx((2.0 + 6.0) / 2)
    assert aggregate_loss(loss, mask, "bnpo") == pytest.approx(12.0 / 4)
    assert aggregate_loss(loss, mask, "dapo") == pytest.approx(12.0 / 4)
    assert aggregate_loss(loss, mask, "dr_grpo") == pytest.approx(12.0 / 6)
    assert aggregate_loss(loss, mask, "dr_grpo", max_length=10) == pytest.approx(12.0 / 20)
    # masked steps do not contribute, whatever they hold
    noisy = torch.where(mask, loss, torch.full_like(loss, 1e6))
    for mode in ("grpo", "bnpo", "dapo", "dr_grpo"):
        assert aggregate_loss(noisy, mask, mode) == aggregate_loss(loss, mask, mode)
    # an empty episode (all masked) is ignored by grpo
    loss3 = torch.cat([loss, torch.full((1, 3), 9.0)])
    mask3 = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)])
    assert aggregate_loss(loss3, mask3, "grpo") == pytest.approx(4.0)


def test_bad_arguments():
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="clip_range"):
        clipped_surrogate_loss(x, x, x, -0.1)
    with pytest.raises(ValueError, match="clip_range_high"):
        clipped_surrogate_loss(x, x, x, 0.2, -0.1)
    with pytest.raises(ValueError, match="advantages"):
        clipped_surrogate_loss(x, x, torch.zeros(4), 0.2)
    with pytest.raises(ValueError, match="mode"):
        aggregate_loss(x, mode="mean")
    with pytest.raises(ValueError, match="estimator"):
        kl_estimate(x, x, "k4")


def test_kl_estimators_against_exact_categorical():
    g = torch.Generator().manual_seed(0)
    p = Categorical(logits=torch.randn(5, generator=g))
    q = Categorical(logits=torch.randn(5, generator=g))
    exact = float(exact_kl(p, q))
    torch.manual_seed(0)
    x = p.sample((200_000,))
    lp, lq = p.log_prob(x), q.log_prob(x)
    for est in ("k1", "k3"):  # unbiased
        values = kl_estimate(lp, lq, est)
        se = float(values.std()) / len(values) ** 0.5
        assert abs(float(values.mean()) - exact) < 5 * se
    k3 = kl_estimate(lp, lq, "k3")
    assert (k3 >= 0).all()
    # for nearby distributions (the regime of a trust region) k3 has a lower variance than k1
    q_near = Categorical(logits=p.logits + 0.1 * torch.randn(5, generator=g))
    lq_near = q_near.log_prob(x)
    assert kl_estimate(lp, lq_near, "k3").var() < kl_estimate(lp, lq_near, "k1").var()
    assert float(kl_estimate(lp, lp, "k2").abs().max()) == 0.0


def test_exact_kl_gaussian_closed_form_and_fallback():
    p, q = Normal(torch.tensor(0.0), torch.tensor(1.0)), Normal(torch.tensor(1.0), torch.tensor(2.0))
    expected = torch.log(torch.tensor(2.0)) + (1 + 1) / (2 * 4) - 0.5
    torch.testing.assert_close(exact_kl(p, q), expected)

    class NoKL(Normal):
        pass

    with pytest.raises(ValueError, match="num_samples"):
        exact_kl(NoKL(0.0, 1.0), Categorical(logits=torch.zeros(2)))


def test_core_imports_no_rl_framework():
    code = (
        "import sys, pg_extras; "
        "bad = [m for m in ('stable_baselines3', 'torchrl', 'tensordict', 'gymnasium', 'sb3_contrib', 'rl_zoo3') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- numerical robustness (issue 10) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0), (0,)])
def test_aggregate_empty_batch_is_zero_with_a_graph(mode, shape):
    loss = torch.zeros(shape, requires_grad=True)
    out = aggregate_loss(loss, torch.zeros(shape, dtype=torch.bool), mode)
    assert out.item() == 0.0
    out.backward()  # the graph is kept: an optimizer step on an empty batch is a no-op, not a crash
    assert loss.grad is not None and loss.grad.shape == shape
    if len(shape) == 2:
        assert aggregate_loss(loss.detach(), None, mode, max_length=4).item() == 0.0


@pytest.mark.parametrize("mode", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_aggregate_all_padding_is_zero_and_gradients_are_zero(mode):
    loss = torch.full((2, 3), float("nan")).requires_grad_(True)  # padding content must not matter
    out = aggregate_loss(loss, torch.zeros(2, 3, dtype=torch.bool), mode)
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(loss.grad, torch.zeros(2, 3))


def test_aggregate_lets_valid_non_finite_steps_through_for_the_line_search():
    # a trust-region line search evaluates the surrogate at trial parameters and rejects a non-finite one itself
    assert math.isnan(aggregate_loss(torch.tensor([[1.0, float("nan")]]), None, "bnpo").item())
    with pytest.raises(ValueError, match=r"max_length=0 is invalid.*integer >= 1"):
        aggregate_loss(torch.zeros(2, 3), None, "dr_grpo", max_length=0)


@pytest.mark.parametrize("bad", [float("nan"), -float("inf"), float("inf")])
def test_surrogate_names_the_non_finite_log_prob(bad):
    ok = torch.zeros(3)
    broken = torch.tensor([0.0, bad, 0.0])
    adv = torch.ones(3)
    with pytest.raises(ValueError, match=r"^old_log_prob has non-finite.*behaviour log-prob"):
        clipped_surrogate_loss(ok, broken, adv, 0.2)
    with pytest.raises(ValueError, match=r"^log_prob has non-finite.*probability 0"):
        clipped_surrogate_loss(broken, ok, adv, 0.2)
    with pytest.raises(ValueError, match=r"^advantages has non-finite"):
        clipped_surrogate_loss(ok, ok, broken, None)
    with pytest.raises(ValueError, match=r"^old_log_prob has non-finite"):
        importance_ratio(ok, broken)


def test_surrogate_ratio_overflow_raises_instead_of_a_nan_gradient():
    # exp(100) overflows float32; with A = 0 the loss would be NaN, with A > 0 the gradient would be NaN
    logp = torch.tensor([100.0, 0.0], requires_grad=True)
    for adv in (torch.zeros(2), torch.ones(2)):
        with pytest.raises(ValueError, match=r"importance ratio.*overflows.*learning rate"):
            clipped_surrogate_loss(logp, torch.zeros(2), adv, 0.2)
    # a large but representable ratio is fine, and clipped
    loss, clipped = clipped_surrogate_loss(torch.tensor([50.0]), torch.zeros(1), torch.ones(1), 0.2)
    assert torch.isfinite(loss).all() and bool(clipped.all())


def test_importance_ratio_does_not_judge_trial_log_probs():
    # the trust-region line search evaluates log_prob at trial parameters and rejects non-finite results itself
    ratio = importance_ratio(torch.tensor([float("nan"), 1000.0]), torch.zeros(2))
    assert torch.isnan(ratio[0]) and torch.isinf(ratio[1])


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimate_non_finite_inputs_and_overflow(estimator):
    ok = torch.zeros(2)
    for bad in (float("nan"), -float("inf")):
        broken = torch.tensor([0.0, bad])
        with pytest.raises(ValueError, match=r"^log_p has non-finite.*probability 0"):
            kl_estimate(broken, ok, estimator)
        with pytest.raises(ValueError, match=r"^log_q has non-finite"):
            kl_estimate(ok, broken, estimator)
    huge = {"k1": 3e38, "k2": 1e20, "k3": 100.0}[estimator]
    with pytest.raises(ValueError, match=r"KL estimate.*overflow.*too far apart"):
        kl_estimate(torch.tensor([-huge]), torch.tensor([huge]), estimator)
    assert kl_estimate(torch.zeros(0), torch.zeros(0), estimator).shape == (0,)
