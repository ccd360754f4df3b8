"""pg_extras.policy_objective: the one per-step objective of every adapter, and its options object."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pg_extras import (
    UPDATE_RULES,
    ObjectiveOptions,
    kl_estimate,
    objective_option,
    policy_objective,
)


def _batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, generator=g) - 0.1
    log_prob = (old + 0.3 * torch.randn(n, generator=g)).requires_grad_(True)
    return log_prob, old, torch.randn(n, generator=g), old - 0.2 * torch.rand(n, generator=g)


@pytest.mark.parametrize("rule", UPDATE_RULES)
def test_each_rule_matches_the_formula_of_the_paper(rule):
    """Per step, by hand: pg ``-log pi A``; trust region ``-rho A``; PPO-clip ``-min(rho A, clip(rho) A)``; CISPO
    ``-sg(min(rho, 1 + eps)) A log pi``; SAPO ``-(4 / tau) sigmoid(tau (rho - 1)) A``."""
    log_prob, old, adv, _ = _batch()
    terms = policy_objective(ObjectiveOptions(rule), log_prob, old, adv, clip_range=0.2)
    rho = torch.exp(log_prob - old).detach()
    expected = {
        "pg": -log_prob.detach() * adv,
        "trust_region": -rho * adv,
        "ppo_clip": -torch.min(rho * adv, rho.clamp(0.8, 1.2) * adv),
        "cispo": -rho.clamp(max=1.2) * adv * log_prob.detach(),
        "sapo": -(4 / torch.where(adv > 0, 1.0, 1.05)) * torch.sigmoid(torch.where(adv > 0, 1.0, 1.05) * (rho - 1)) * adv,
    }[rule]
    torch.testing.assert_close(terms.policy.detach(), expected)
    assert terms.kl_penalty is None and terms.entropy_bonus is None and terms.entropy_mask_fraction is None
    torch.testing.assert_close(terms.total(), terms.policy)
    torch.testing.assert_close(terms.approx_kl, kl_estimate(old, log_prob.detach(), "k3"))


def test_the_kl_and_entropy_terms_add_up_with_their_coefficients():
    log_prob, old, adv, ref = _batch()
    entropy = torch.rand(12)
    terms = policy_objective(
        ObjectiveOptions("ppo_clip"), log_prob, old, adv, clip_range=0.2, beta=0.5, ent_coef=0.1, ref_log_prob=ref,
        entropy=entropy,
    )  # fmt: skip
    kl = torch.exp(ref - log_prob) - (ref - log_prob) - 1  # k3 of KL(pi || pi_ref)
    torch.testing.assert_close(terms.kl_penalty, 0.5 * kl)
    torch.testing.assert_close(terms.entropy_bonus, -0.1 * entropy)
    torch.testing.assert_close(terms.total(), terms.policy + 0.5 * kl - 0.1 * entropy)
    # the KL is a gradient path to the policy, the reference is not
    terms.total().sum().backward()
    assert log_prob.grad is not None and ref.grad is None
    # beta = 0 with a reference: the KL is only logged
    logged = policy_objective(ObjectiveOptions("ppo_clip"), log_prob, old, adv, clip_range=0.2, ref_log_prob=ref)
    assert logged.kl_penalty is None and set(logged.losses()) == {"policy"}
    torch.testing.assert_close(logged.kl.detach(), kl.detach())


def test_bias_corrected_kl_is_weighted_by_the_ratio():
    log_prob, old, adv, ref = _batch()
    options = ObjectiveOptions("ppo_clip", use_bias_correction_kl=True, kl_estimator="k1")
    terms = policy_objective(options, log_prob, old, adv, clip_range=0.2, beta=1.0, ref_log_prob=ref)
    torch.testing.assert_close(terms.kl, torch.exp(log_prob - old) * (log_prob - ref))


def test_top_entropy_keeps_the_policy_term_of_the_high_entropy_steps_in_the_loss():
    log_prob, old, adv, _ = _batch(8)
    entropy = torch.tensor([0.1, 0.9, 0.5, 0.7, 5.0, 0.2, 0.3, 0.8])
    in_loss = torch.tensor([True] * 4 + [False] + [True] * 3)  # the 5.0 step is padding: it must not count
    options = ObjectiveOptions("ppo_clip", top_entropy_quantile=0.5)
    terms = policy_objective(options, log_prob, old, adv, clip_range=0.2, entropy=entropy, in_loss=in_loss)
    full = policy_objective(ObjectiveOptions("ppo_clip"), log_prob, old, adv, clip_range=0.2)
    kept = terms.policy != 0
    assert kept.tolist() == [False, True, True, True, False, False, False, True]  # entropy >= the median 0.5
    torch.testing.assert_close(terms.policy[kept], full.policy[kept])
    assert math.isclose(float(terms.entropy_mask_fraction), 4 / 7, rel_tol=1e-6)


def test_the_entropy_function_is_called_only_when_a_term_needs_it():
    log_prob, old, adv, _ = _batch()
    calls = []

    def entropy():
        calls.append(1)
        return torch.rand(12)

    policy_objective(ObjectiveOptions("pg"), log_prob, old, adv, entropy=entropy)
    assert calls == []
    assert policy_objective(ObjectiveOptions("pg"), log_prob, old, adv, ent_coef=0.01, entropy=entropy).entropy is not None
    policy_objective(ObjectiveOptions("pg", top_entropy_quantile=0.5), log_prob, old, adv, entropy=entropy)
    assert calls == [1, 1]


def test_missing_inputs_are_refused_with_the_fix():
    log_prob, old, adv, _ = _batch()
    with pytest.raises(ValueError, match=r"beta=0\.1 needs ref_log_prob"):
        policy_objective(ObjectiveOptions("ppo_clip"), log_prob, old, adv, clip_range=0.2, beta=0.1)
    with pytest.raises(ValueError, match=r"ent_coef=0\.1 needs entropy"):
        policy_objective(ObjectiveOptions("pg"), log_prob, old, adv, ent_coef=0.1)
    with pytest.raises(ValueError, match="top_entropy_quantile < 1 ranks the steps by entropy"):
        policy_objective(ObjectiveOptions("pg", top_entropy_quantile=0.5), log_prob, old, adv)
    with pytest.raises(ValueError, match="needs clip_range"):
        policy_objective(ObjectiveOptions("ppo_clip"), log_prob, old, adv)
    with pytest.raises(ValueError, match="needs old_log_prob"):
        policy_objective(ObjectiveOptions("trust_region"), log_prob, None, adv)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(update_rule="ppo"), "update_rule"),
        (dict(update_rule="pg", delta=4.0), "delta=4.0 is a bound of update_rule='ppo_clip'"),
        (dict(update_rule="cispo", clip_ratio_c=3.0), "clip_ratio_c=3.0 is a bound"),
        (dict(delta=0.5), "delta"),
        (dict(sapo_temperature_neg=0.0), "sapo_temperature_neg"),
        (dict(importance_sampling_level="episode"), "importance_sampling_level"),
        (dict(kl_estimator="k4"), "kl_estimator"),
        (dict(loss_aggregation="mean"), "loss_aggregation"),
        (dict(top_entropy_quantile=0.0), "top_entropy_quantile"),
        (dict(use_bias_correction_kl="yes"), "use_bias_correction_kl"),
        (dict(update_rule="pg", update_rules=("ppo_clip", "cispo")), "use one of 'ppo_clip', 'cispo'"),
    ],
)
def test_options_are_checked_once_when_built(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ObjectiveOptions(**kwargs)


def test_options_are_frozen_and_an_option_attribute_rechecks_on_set():
    options = ObjectiveOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.update_rule = "pg"  # type: ignore[misc]

    class Holder:
        objective_options = options
        update_rule = objective_option("update_rule")
        top_entropy_quantile = objective_option("top_entropy_quantile")

    holder = Holder()
    holder.update_rule = "cispo"
    assert holder.objective_options.update_rule == "cispo" and options.update_rule == "ppo_clip"
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        holder.top_entropy_quantile = 1.5
    assert holder.objective_options.top_entropy_quantile == 1.0
    with pytest.raises(ValueError, match="not a field"):
        objective_option("clip_range")
