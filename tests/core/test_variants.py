"""The GRPO variants of docs/maths.md#12-variants, against hand-computed values (and gradients where they are the point)."""

from __future__ import annotations

import math

import pytest
import torch

from pg_extras import (
    cispo_loss,
    clipped_surrogate_loss,
    estimate_advantages,
    gpg_alpha,
    group_normalize,
    group_relative_advantages,
    informative_groups,
    kl_estimate,
    mask_truncated_episodes,
    mix_parameters_,
    policy_loss,
    regularized_loss,
    remax_advantages,
    sapo_loss,
    sequence_log_ratio,
    top_entropy_mask,
)

D = torch.float64


def t(*values):
    return torch.tensor(values, dtype=D)


def padded(rows):
    """``(rewards [E, L], mask [E, L])`` from a list of per-episode reward lists."""
    L = max(len(r) for r in rows)
    rewards = torch.zeros(len(rows), L, dtype=D)
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for i, r in enumerate(rows):
        rewards[i, : len(r)] = t(*r)
        mask[i, : len(r)] = True
    return rewards, mask


# -- GSPO: one ratio per episode ---------------------------------------------------------------------------------------


def test_gspo_sequence_ratio_hand_computed_and_clipped_per_episode():
    # episode 0: log-ratios 0.1, 0.5 (mean 0.3: ratio 1.35 > 1.2, clipped); episode 1: -0.1 (ratio 0.905, inside)
    log_prob = t(0.1, 0.5, -0.1).requires_grad_()
    old, adv, episode = torch.zeros(3, dtype=D), t(1.0, 1.0, 2.0), torch.tensor([0, 0, 1])
    torch.testing.assert_close(sequence_log_ratio(log_prob.detach(), episode), t(0.3, 0.3, -0.1))
    loss, clipped = clipped_surrogate_loss(
        log_prob, old, adv, 0.2, importance_sampling_level="sequence", episode_index=episode
    )
    torch.testing.assert_close(loss, t(-1.2, -1.2, -2.0 * math.exp(-0.1)))
    assert clipped.tolist() == [True, True, False]
    loss.sum().backward()
    # episode 0 is clipped: no gradient; episode 1 (one step): d(-rho A)/d logp = -rho A
    torch.testing.assert_close(log_prob.grad, t(0.0, 0.0, -2.0 * math.exp(-0.1)))


def test_gspo_gradient_spreads_over_the_episode_steps():
    log_prob = t(0.02, -0.04, 0.0).requires_grad_()
    loss, _ = clipped_surrogate_loss(
        log_prob, torch.zeros(3, dtype=D), t(1.0, 1.0, 1.0), 0.2, importance_sampling_level="sequence",
        episode_index=torch.tensor([0, 0, 0]),
    )  # fmt: skip
    loss.sum().backward()
    rho = math.exp((0.02 - 0.04) / 3)
    # three steps each with loss -rho A; d rho / d logp_t = rho / 3, so each step's gradient is 3 * (-rho / 3)
    torch.testing.assert_close(log_prob.grad, torch.full((3,), -rho, dtype=D))


def test_sequence_level_pads_and_bad_arguments():
    assert sequence_log_ratio(t(1.0, 2.0), torch.tensor([-1, -1])).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="episode_index"):
        clipped_surrogate_loss(t(0.0), t(0.0), t(1.0), 0.2, importance_sampling_level="sequence")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        clipped_surrogate_loss(t(0.0), t(0.0), t(1.0), 0.2, importance_sampling_level="episode")
    with pytest.raises(ValueError, match="episode_index"):
        sequence_log_ratio(t(0.0), t(0.0))


# -- two-sided clip (delta) and dual clip (clip_ratio_c) ---------------------------------------------------------------


def test_two_sided_clip_caps_negative_advantage_steps():
    log_prob = torch.log(t(3.0, 3.0, 1.1)).requires_grad_()
    adv = t(-1.0, 1.0, -1.0)
    plain, _ = clipped_surrogate_loss(log_prob.detach(), torch.zeros(3, dtype=D), adv, 0.2)
    loss, clipped = clipped_surrogate_loss(log_prob, torch.zeros(3, dtype=D), adv, 0.2, delta=2.0)
    # A < 0, rho 3: -min(3 * -1, 1.2 * -1) = 3 without delta, -min(2 * -1, 1.2 * -1) = 2 with delta = 2
    torch.testing.assert_close(plain, t(3.0, -1.2, 1.1))
    torch.testing.assert_close(loss, t(2.0, -1.2, 1.1))
    assert clipped.tolist() == [True, True, False]
    loss.sum().backward()
    assert log_prob.grad[0] == 0 and log_prob.grad[1] == 0 and log_prob.grad[2] != 0


def test_dual_clip_bounds_the_loss_of_negative_advantages():
    log_prob = torch.log(t(4.0, 2.0, 4.0)).requires_grad_()
    adv = t(-1.0, -1.0, 1.0)
    loss, clipped = clipped_surrogate_loss(log_prob, torch.zeros(3, dtype=D), adv, 0.2, clip_ratio_c=3.0)
    # rho 4, A -1: min(max(4, 1.2), 3) = 3; rho 2: min(2, 3) = 2; A > 0 is untouched (-1.2)
    torch.testing.assert_close(loss, t(3.0, 2.0, -1.2))
    assert clipped.tolist() == [True, True, True]  # rho = 2 is outside [0.8, 1.2] (SB3's clip_fraction convention)
    loss.sum().backward()
    assert log_prob.grad[0] == 0 and log_prob.grad[1] != 0


def test_dual_clip_equals_two_sided_clip_when_c_equals_delta_above_the_clip():
    g = torch.Generator().manual_seed(1)
    log_prob = torch.randn(200, generator=g, dtype=D)
    old, adv = torch.zeros(200, dtype=D), torch.randn(200, generator=g, dtype=D)
    for bound in (1.28, 2.0, 3.0):
        dual, _ = clipped_surrogate_loss(log_prob, old, adv, 0.2, 0.28, clip_ratio_c=bound)
        two_sided, _ = clipped_surrogate_loss(log_prob, old, adv, 0.2, 0.28, delta=bound)
        torch.testing.assert_close(dual, two_sided)
    # below 1 + eps_high, delta also tightens the clip of positive advantages: they differ
    dual, _ = clipped_surrogate_loss(log_prob, old, adv, 0.2, 0.28, clip_ratio_c=1.1)
    two_sided, _ = clipped_surrogate_loss(log_prob, old, adv, 0.2, 0.28, delta=1.1)
    assert not torch.allclose(dual, two_sided)


@pytest.mark.parametrize("name", ["delta", "clip_ratio_c"])
@pytest.mark.parametrize("value", [1.0, 0.5, -2.0, float("nan")])
def test_ratio_bounds_at_or_below_one_are_errors(name, value):
    with pytest.raises(ValueError, match=name):
        clipped_surrogate_loss(t(0.0), t(0.0), t(1.0), 0.2, **{name: value})


# -- CISPO -------------------------------------------------------------------------------------------------------------


def test_cispo_values_and_gradient_keep_clipped_steps():
    ratios = t(2.0, 0.5, 1.1)
    log_prob = torch.log(ratios).requires_grad_()
    adv = t(1.0, -1.0, 2.0)
    loss, clipped = cispo_loss(log_prob, torch.zeros(3, dtype=D), adv, ratio_cap=1.28)
    weight = torch.clamp(ratios, max=1.28)
    torch.testing.assert_close(loss, -weight * adv * torch.log(ratios))
    assert clipped.tolist() == [True, False, False]
    loss.sum().backward()
    # the gradient is -sg(min(rho, cap)) A grad log pi: the clipped step (rho = 2) keeps -1.28 * A
    torch.testing.assert_close(log_prob.grad, -weight * adv)
    # PPO-clip zeroes that step's gradient instead
    ppo_lp = torch.log(ratios).requires_grad_()
    clipped_surrogate_loss(ppo_lp, torch.zeros(3, dtype=D), adv, 0.28)[0].sum().backward()
    assert ppo_lp.grad[0] == 0


def test_cispo_gradient_through_a_policy_network():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g, dtype=D, requires_grad=True)
    actions = torch.tensor([0, 1, 2, 1, 0])
    old = torch.log_softmax(logits.detach() + 0.3 * torch.randn(5, 3, generator=g, dtype=D), -1)[range(5), actions]
    adv = torch.randn(5, generator=g, dtype=D)
    log_prob = torch.log_softmax(logits, -1)[range(5), actions]
    cispo_loss(log_prob, old, adv, ratio_cap=1.1)[0].sum().backward()
    weight = torch.clamp(torch.exp(log_prob.detach() - old), max=1.1)
    # by hand: d/dlogits of -w A log softmax_a = -w A (onehot(a) - softmax)
    expected = -(weight * adv)[:, None] * (torch.eye(3, dtype=D)[actions] - torch.softmax(logits.detach(), -1))
    torch.testing.assert_close(logits.grad, expected)


def test_policy_loss_cispo_caps_at_one_plus_clip_range_high():
    lp = torch.log(t(2.0))
    loss, _ = policy_loss("cispo", lp, t(0.0), t(1.0), clip_range=0.2, clip_range_high=0.5)
    torch.testing.assert_close(loss, -1.5 * lp)
    loss, _ = policy_loss("cispo", lp, t(0.0), t(1.0), clip_range=0.2)
    torch.testing.assert_close(loss, -1.2 * lp)


# -- SAPO --------------------------------------------------------------------------------------------------------------


def test_sapo_soft_gate_hand_computed():
    log_prob = torch.log(t(1.5, 1.5, 1.0)).requires_grad_()
    adv = t(1.0, -1.0, 2.0)
    loss, clipped = sapo_loss(log_prob, torch.zeros(3, dtype=D), adv, temperature_pos=2.0, temperature_neg=4.0)
    sig = torch.sigmoid
    expected = t(
        -(4 / 2.0) * float(sig(t(2.0 * 0.5))) * 1.0,  # A > 0: tau_pos
        (4 / 4.0) * float(sig(t(4.0 * 0.5))),  # A < 0: tau_neg
        -(4 / 2.0) * 0.5 * 2.0,  # rho = 1: -(4 / tau) / 2 * A
    )
    torch.testing.assert_close(loss, expected)
    assert not clipped.any()
    loss.sum().backward()
    # at rho = 1 the gate's slope is 1: the gradient is the policy gradient -A (d rho / d logp = 1)
    torch.testing.assert_close(log_prob.grad[2], t(-2.0)[0])
    with pytest.raises(ValueError, match="sapo_temperature_neg"):
        sapo_loss(t(0.0), t(0.0), t(1.0), 1.0, 0.0)


# -- REINFORCE++, REINFORCE++-baseline, OPO, GPG -----------------------------------------------------------------------


def test_reinforce_pp_whitens_returns_to_go_over_the_batch():
    rewards, mask = padded([[1.0, 1.0], [1.0]])
    adv = group_relative_advantages(rewards, mask, group_size=2, mode="reinforce_pp").advantages
    # returns-to-go 2, 1, 1: mean 4/3, unbiased std sqrt(1/3)
    std = math.sqrt(1 / 3)
    expected = torch.tensor([[(2 - 4 / 3) / std, (1 - 4 / 3) / std], [(1 - 4 / 3) / std, 0.0]], dtype=D)
    torch.testing.assert_close(adv, expected)
    # the scale does not apply: the mode whitens itself
    for scale in ("batch", "none", "gpg"):
        torch.testing.assert_close(
            group_relative_advantages(rewards, mask, group_size=2, mode="reinforce_pp", scale=scale).advantages, expected
        )


def test_reinforce_pp_baseline_centres_per_step_in_the_group_then_whitens():
    # group 0: rewards-to-go (3, 2, 1) and (1); group 1: (2) and (4)
    rewards, mask = padded([[1.0, 1.0, 1.0], [1.0], [2.0], [4.0]])
    adv = group_relative_advantages(rewards, mask, group_size=2, mode="reinforce_pp_baseline").advantages
    # centred at t=0: group 0 (3 - 2, 1 - 2) = (1, -1), group 1 (-1, 1); t >= 1: one member running -> 0
    centred = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0]], dtype=D)
    values = centred[mask]
    expected = torch.where(mask, (centred - values.mean()) / values.std(), torch.zeros_like(centred))
    torch.testing.assert_close(adv, expected)


def test_opo_length_weighted_baseline():
    rewards, mask = padded([[1.0, 1.0, 1.0], [1.0, 1.0], [2.0], [1.0]])
    adv = group_relative_advantages(rewards, mask, group_size=2, mode="opo", scale="none").advantages
    # group 0: R = (3, 2), L = (3, 2): b = (9 + 4) / 5 = 2.6; group 1: R = (2, 1), L = (1, 1): b = 1.5
    torch.testing.assert_close(adv[:, 0], t(0.4, -0.6, 0.5, -0.5))
    assert (adv[mask] == adv[:, :1].expand_as(adv)[mask]).all() and (adv[~mask] == 0).all()
    # with scale='group' it is divided by the group std of R (the std is not weighted)
    grouped = group_relative_advantages(rewards, mask, group_size=2, mode="opo").advantages[:, 0]
    torch.testing.assert_close(grouped, t(0.4, -0.6, 0.5, -0.5) / math.sqrt(0.5))  # both groups: std 1 / sqrt(2)


def test_weighted_group_normalize_and_weighted_rloo():
    values, gid, w = t(1.0, 2.0, 4.0), torch.tensor([0, 0, 0]), t(1.0, 1.0, 2.0)
    centred, _ = group_normalize(values, gid, scale="none", weights=w)
    torch.testing.assert_close(centred, values - (1 + 2 + 8) / 4)
    loo, _ = group_normalize(values, gid, scale="none", rloo=True, weights=w)
    # baseline of member 0: (2 * 1 + 4 * 2) / 3; of member 2: (1 + 2) / 2
    torch.testing.assert_close(loo, t(1 - 10 / 3, 2 - 9 / 3, 4 - 1.5))
    with pytest.raises(ValueError, match="weights"):
        group_normalize(values, gid, weights=t(1.0, -1.0, 1.0))


def test_gpg_alpha_is_batch_size_over_nonzero_returns():
    # returns (1, 0) and (0, 2): alpha = 4 / 2; centred (0.5, -0.5), (-1, 1) without the std
    rewards, mask = padded([[1.0], [0.0], [0.0], [2.0]])
    adv = group_relative_advantages(rewards, mask, group_size=2, scale="gpg").advantages[:, 0]
    torch.testing.assert_close(adv, t(1.0, -1.0, -2.0, 2.0))
    assert float(gpg_alpha(t(0.0, 0.0))) == 1.0 and float(gpg_alpha(t(3.0, 0.0, 1.0))) == 1.5
    normalised, _ = group_normalize(t(1.0, 0.0, 0.0, 2.0), torch.tensor([0, 0, 1, 1]), scale="gpg")
    torch.testing.assert_close(normalised, adv)


def test_new_modes_through_the_estimator_interface():
    # a flat stream of three episodes (1, 1) | (1) | (2); the first two form group 0 (each step carries its group)
    r = t(1.0, 1.0, 1.0, 2.0)
    term = torch.tensor([False, True, True, True])
    gid = torch.tensor([0, 0, 0, 1])
    rewards, mask = padded([[1.0, 1.0], [1.0], [2.0]])
    for mode in ("reinforce_pp", "reinforce_pp_baseline", "opo"):
        est = estimate_advantages("group", r, term, group_ids=gid, group_mode=mode, gamma=1.0)
        expected = group_relative_advantages(rewards, mask, group_ids=torch.tensor([0, 0, 1]), mode=mode).advantages
        torch.testing.assert_close(est.advantages, expected[mask])


# -- ReMax -------------------------------------------------------------------------------------------------------------


def test_remax_baseline_is_the_greedy_return_of_the_group():
    rewards, mask = padded([[1.0, 1.0, 1.0], [1.0], [2.0], [1.0, 1.0]])
    greedy_per_group = t(2.0, 3.0)
    baseline = greedy_per_group[torch.tensor([0, 0, 1, 1])]
    adv = remax_advantages(rewards, mask, baseline)
    torch.testing.assert_close(adv[:, 0], t(1.0, -1.0, -1.0, -1.0))
    assert (adv[~mask] == 0).all() and (adv[0] == 1.0).all()
    discounted = remax_advantages(rewards, mask, baseline, gamma=0.5)
    torch.testing.assert_close(discounted[:, 0], t(1.75 - 2.0, 1.0 - 2.0, 2.0 - 3.0, 1.5 - 3.0))
    with pytest.raises(ValueError, match="baseline_returns"):
        remax_advantages(rewards, mask, t(1.0))


def test_remax_mode_of_the_group_estimator_uses_the_greedy_return_per_group():
    rewards, mask = padded([[1.0, 1.0, 1.0], [1.0], [2.0], [1.0, 1.0]])
    gid = torch.tensor([0, 0, 1, 1])
    baseline = t(2.0, 3.0)[gid]
    out = group_relative_advantages(rewards, mask, group_ids=gid, mode="remax", baseline_returns=baseline)
    torch.testing.assert_close(out.advantages, remax_advantages(rewards, mask, baseline))  # unnormalised, any scale
    # the flat estimator interface reads the baseline at each episode's first step
    r, term = rewards[mask], torch.zeros(int(mask.sum()), dtype=torch.bool)
    term[torch.cumsum(mask.sum(1), 0) - 1] = True
    per_step = baseline[:, None].expand_as(rewards)[mask]
    est = estimate_advantages(
        "group",
        r,
        term,
        group_ids=gid[:, None].expand_as(rewards)[mask],
        group_mode="remax",
        gamma=1.0,
        baseline_returns=per_step,
    )
    torch.testing.assert_close(est.advantages, out.advantages[mask])
    with pytest.raises(ValueError, match="baseline_returns"):
        group_relative_advantages(rewards, mask, group_ids=gid, mode="remax")
    with pytest.raises(ValueError, match="rloo"):
        group_relative_advantages(rewards, mask, group_ids=gid, mode="remax", rloo=True, baseline_returns=baseline)
    with pytest.raises(ValueError, match="mode='remax'"):
        group_relative_advantages(rewards, mask, group_ids=gid, baseline_returns=baseline)


# -- dynamic sampling, truncation mask, top-entropy steps --------------------------------------------------------------


def test_dynamic_sampling_drops_zero_spread_and_out_of_bounds_groups():
    returns = t(0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1e-300, 1e-300)
    gid = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    keep, dropped = informative_groups(returns, gid)
    assert keep.tolist() == [False, False, False, False, True, True, False, False] and dropped == 3
    # the bounds act on the group's mean return (TorchRL's keep_return_bounds); zero spread may be kept
    keep, dropped = informative_groups(returns, gid, keep_return_bounds=(0.1, 0.9), drop_zero_spread=False)
    assert keep.tolist() == [False, False, False, False, True, True, False, False] and dropped == 3
    keep, dropped = informative_groups(returns, gid, keep_return_bounds=(0.5, None), drop_zero_spread=False)
    assert keep.tolist() == [False, False, True, True, True, True, False, False] and dropped == 2
    with pytest.raises(ValueError, match="keep_return_bounds"):
        informative_groups(returns, gid, keep_return_bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="keep_return_bounds"):
        informative_groups(returns, gid, keep_return_bounds=(0.0,))
    keep, dropped = informative_groups(t(), torch.zeros(0, dtype=torch.long))
    assert keep.shape == (0,) and dropped == 0


def test_truncated_episodes_leave_the_loss_but_not_the_group_statistics():
    rewards, mask = padded([[1.0, 1.0, 1.0], [1.0], [1.0, 1.0], [1.0]])
    truncated = torch.zeros_like(mask)
    truncated[0, 2] = True  # episode 0 was cut by the time limit
    in_loss = mask_truncated_episodes(mask, truncated)
    assert in_loss.tolist() == [[False] * 3, [True, False, False], [True, True, False], [True, False, False]]
    assert mask_truncated_episodes(mask, truncated.any(1)).equal(in_loss)
    # the advantages are computed on every episode first: episode 1 is still compared with the truncated episode 0
    adv = group_relative_advantages(rewards, mask, group_size=2).advantages
    assert adv[1, 0] < 0 and adv[0, 0] > 0
    # and the loss of the group is the loss of the episodes kept, whatever the truncated one holds
    from pg_extras import aggregate_loss

    loss = torch.where(mask, -adv, torch.zeros_like(adv))
    noisy = loss.clone()
    noisy[0] = 1e9
    for mode in ("grpo", "bnpo", "dr_grpo"):
        assert aggregate_loss(noisy, in_loss, mode) == aggregate_loss(loss, in_loss, mode)
    torch.testing.assert_close(aggregate_loss(loss, in_loss, "grpo"), -(adv[1, 0] + adv[2, 0] + adv[3, 0]) / 3)


def test_top_entropy_quantile_keeps_the_highest_entropy_steps():
    entropy = t(0.1, 0.9, 0.5, 0.7, 0.3)
    assert top_entropy_mask(entropy, 1.0).all()
    assert top_entropy_mask(entropy, 0.4).tolist() == [False, True, False, True, False]  # threshold 0.6 quantile: 0.58
    assert top_entropy_mask(entropy, 0.2).tolist() == [False, True, False, False, False]
    mask = torch.tensor([True, False, True, True, True])  # the 0.9 step is padding
    assert top_entropy_mask(entropy, 0.25, mask).tolist() == [False, False, False, True, False]
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="top_entropy_quantile"):
            top_entropy_mask(entropy, bad)


# -- KL estimators: k3+, bias correction -------------------------------------------------------------------------------


def _policies():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, generator=g, dtype=D, requires_grad=True)
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=D), -1)
    behaviour = torch.log_softmax(torch.randn(6, generator=g, dtype=D), -1)
    return logits, ref, behaviour


def _kl(log_p, log_q):
    return (log_p.exp() * (log_p - log_q)).sum()


def test_k3_plus_has_k3_value_and_k2_gradient():
    log_p = t(-1.0, -0.2, -3.0).requires_grad_()
    log_q = t(-2.0, -0.1, -0.5)
    k3p = kl_estimate(log_p, log_q, "k3+")
    torch.testing.assert_close(k3p, kl_estimate(log_p.detach(), log_q, "k3"))
    (grad,) = torch.autograd.grad(k3p.sum(), log_p)
    torch.testing.assert_close(grad, (log_p - log_q).detach())  # d/dlogp of (log p - log q)^2 / 2


def test_k3_plus_on_policy_gradient_is_the_forward_kl_gradient():
    logits, ref, _ = _policies()

    # expectation over a ~ pi of the per-sample gradient (the sampling distribution held fixed)
    def grad(fn):
        log_pi = torch.log_softmax(logits, -1)
        return torch.autograd.grad(fn(log_pi), logits)[0]

    k3p = grad(lambda lp: (lp.exp().detach() * kl_estimate(lp, ref, "k3+")).sum())
    k3 = grad(lambda lp: (lp.exp().detach() * kl_estimate(lp, ref, "k3")).sum())
    forward, reverse = grad(lambda lp: _kl(lp, ref)), grad(lambda lp: _kl(ref, lp))
    torch.testing.assert_close(k3p, forward)  # k3+ follows grad KL(pi || ref) ...
    torch.testing.assert_close(k3, reverse)  # ... plain k3 follows grad KL(ref || pi)


def test_bias_corrected_kl_is_unbiased_off_policy_with_its_gradient():
    logits, ref, behaviour = _policies()
    log_pi = torch.log_softmax(logits, -1)
    loss = torch.zeros(6, dtype=D)
    _, kl = regularized_loss(loss, log_pi, ref, beta=1.0, old_log_prob=behaviour, use_bias_correction_kl=True)
    torch.testing.assert_close(kl, kl_estimate(log_pi, ref, "k3") * torch.exp(log_pi - behaviour))
    # the actions come from the behaviour policy mu: E_mu[(pi / mu) k3] = KL(pi || ref), and so is its gradient
    expected_kl = (behaviour.exp() * kl).sum()
    torch.testing.assert_close(expected_kl, _kl(log_pi, ref))
    (grad,) = torch.autograd.grad(expected_kl, logits)
    (exact,) = torch.autograd.grad(_kl(torch.log_softmax(logits, -1), ref), logits)
    torch.testing.assert_close(grad, exact)
    # without the correction the off-policy expectation is biased
    _, plain = regularized_loss(loss, log_pi.detach(), ref, beta=1.0)
    assert not torch.isclose((behaviour.exp() * plain).sum(), _kl(log_pi.detach(), ref))
    with pytest.raises(ValueError, match="old_log_prob"):
        regularized_loss(loss, log_pi, ref, beta=1.0, use_bias_correction_kl=True)


# -- reference mixing --------------------------------------------------------------------------------------------------


def test_mix_parameters_is_tr_dpo_soft_update():
    ref = [t(0.0, 4.0), torch.tensor([1])]
    pi = [t(2.0, 0.0), torch.tensor([7])]
    mix_parameters_(ref, pi, 0.25)
    torch.testing.assert_close(ref[0], t(0.5, 3.0))  # 0.25 * pi + 0.75 * ref
    assert ref[1].item() == 7  # integer buffers are copied
    mix_parameters_(ref, pi, 1.0)
    torch.testing.assert_close(ref[0], pi[0])
    frozen = [t(1.0)]
    mix_parameters_(frozen, [t(5.0)], 0.0)
    assert frozen[0].item() == 1.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ref_model_mixup_alpha"):
            mix_parameters_(ref, pi, bad)
    with pytest.raises(ValueError, match="source"):
        mix_parameters_([t(1.0)], [t(1.0, 2.0)], 0.5)


@pytest.mark.parametrize("name", ["pg_extras.variants", "pg_extras.objectives", "pg_extras.estimators"])
def test_docstring_examples_of_the_variant_modules(name):
    import doctest
    import importlib

    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, extraglobs={"torch": torch}
    )
    assert result.attempted > 0 and result.failed == 0
