"""Trust-region pieces of TRPO (docs/maths.md#4-importance-ratio-and-trpo): Fisher-vector products, conjugate gradient,
line search and its robustness, the surrogate, the joint KL and the actor parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from pg_extras import (
    action_dims,
    action_kl,
    clipped_surrogate_loss,
    conjugate_gradient,
    diag_gaussian_log_prob,
    fisher_vector_product_fn,
    get_flat_params,
    joint_kl,
    line_search,
    reachable_parameters,
    sample_categorical,
    sample_diag_gaussian,
    set_flat_params,
    trust_region_step,
    trust_region_surrogate,
)


def tiny_policy(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def mean_kl_old_new(net, obs, old_logits):
    """Exact mean KL(pi_old || pi) over the batch for categorical policies."""
    old = torch.log_softmax(old_logits, -1)
    new = torch.log_softmax(net(obs), -1)
    return (old.exp() * (old - new)).sum(-1).mean()


def test_fisher_vector_product_equals_explicit_hessian():
    net = tiny_policy()
    obs = torch.randn(16, 3, dtype=torch.float64)
    with torch.no_grad():
        old_logits = net(obs)
    params = list(net.parameters())
    theta0 = get_flat_params(params)
    shapes = [p.shape for p in params]

    def kl_of_flat(flat):
        chunks, offset = [], 0
        for s in shapes:
            n = int(torch.tensor(s).prod())
            chunks.append(flat[offset : offset + n].view(s))
            offset += n
        h = torch.tanh(obs @ chunks[0].T + chunks[1])
        logits = h @ chunks[2].T + chunks[3]
        old = torch.log_softmax(old_logits, -1)
        return (old.exp() * (old - torch.log_softmax(logits, -1))).sum(-1).mean()

    hessian = torch.autograd.functional.hessian(kl_of_flat, theta0)
    fvp = fisher_vector_product_fn(mean_kl_old_new(net, obs, old_logits), params, damping=0.1)
    for seed in range(3):
        v = torch.randn(theta0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), hessian @ v + 0.1 * v)


def test_conjugate_gradient_solves_spd_systems():
    g = torch.Generator().manual_seed(0)
    for n in (1, 5, 20):
        m = torch.randn(n, n, generator=g, dtype=torch.float64)
        a = m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)
        b = torch.randn(n, generator=g, dtype=torch.float64)
        x = conjugate_gradient(lambda v, a=a: a @ v, b, max_iter=3 * n, residual_tol=1e-20)
        torch.testing.assert_close(x, torch.linalg.solve(a, b))
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, torch.ones(2), max_iter=0)


@pytest.mark.parametrize("max_kl", [1e-3, 1e-2, 5e-2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trust_region_step_respects_kl_bound_and_improves(max_kl, seed):
    net = tiny_policy(seed)
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(64, 3, dtype=torch.float64, generator=g)
    with torch.no_grad():
        old_logits = net(obs)
        old_logp_all = torch.log_softmax(old_logits, -1)
    actions = torch.multinomial(old_logp_all.exp(), 1, generator=g).squeeze(1)
    adv = torch.randn(64, dtype=torch.float64, generator=g)
    old_logp = old_logp_all.gather(1, actions[:, None]).squeeze(1)

    def evaluate():
        logp = torch.log_softmax(net(obs), -1).gather(1, actions[:, None]).squeeze(1)
        return (torch.exp(logp - old_logp) * adv).mean(), mean_kl_old_new(net, obs, old_logits)

    before = get_flat_params(list(net.parameters()))
    result = trust_region_step(list(net.parameters()), evaluate, max_kl=max_kl, cg_max_steps=10, cg_damping=0.01)
    with torch.no_grad():
        surrogate, kl = evaluate()
    if result.accepted:
        assert float(kl) <= max_kl
        assert abs(float(kl) - result.kl) < 1e-12
        assert result.improvement > 0 and float(surrogate) > result.surrogate_before
        assert 1 <= result.steps_tried <= 10
    else:
        assert torch.equal(get_flat_params(list(net.parameters())), before)


def test_line_search_restores_parameters_when_nothing_qualifies():
    w = torch.nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))
    before = w.detach().clone()

    def evaluate():  # KL grows like ||w - w0||^2 and is always above the bound for these steps
        return (w - before).sum(), 100.0 * ((w - before) ** 2).sum()

    result = line_search(
        [w],
        torch.tensor([1.0, 1.0], dtype=torch.float64),
        evaluate,
        surrogate_before=0.0,
        max_kl=1e-6,
        shrinking_factor=0.5,
        max_iter=4,
    )
    assert not result.accepted and result.steps_tried == 4 and result.kl == 0.0
    assert torch.equal(w.detach(), before)


def test_line_search_rejects_non_improving_step():
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def evaluate():  # surrogate decreases along the proposed step
        return -w.sum(), torch.zeros(())

    result = line_search([w], torch.ones(2, dtype=torch.float64), evaluate, 0.0, max_kl=1.0, max_iter=3)
    assert not result.accepted
    assert torch.equal(w.detach(), torch.zeros(2, dtype=torch.float64))


def test_flat_param_round_trip_and_errors():
    net = tiny_policy()
    params = list(net.parameters())
    flat = get_flat_params(params)
    set_flat_params(params, flat * 2)
    torch.testing.assert_close(get_flat_params(params), flat * 2)
    with pytest.raises(ValueError, match="flat"):
        set_flat_params(params, flat[:-1])
    with pytest.raises(ValueError, match="max_kl"):
        trust_region_step(params, lambda: (torch.zeros(()), torch.zeros(())), max_kl=0.0)
    with pytest.raises(ValueError, match="damping"):
        fisher_vector_product_fn((flat * 0).sum(), params, damping=-1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Robustness: bad bounds, evaluations that raise or return non-finite values, surrogates without a graph
# ----------------------------------------------------------------------------------------------------------------------
def _categorical_problem(seed=0):
    net = tiny_policy(seed)
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(32, 3, dtype=torch.float64, generator=g)
    with torch.no_grad():
        old_logits = net(obs)
    actions = torch.multinomial(torch.softmax(old_logits, -1), 1, generator=g).squeeze(1)
    adv = torch.randn(32, dtype=torch.float64, generator=g)
    old_logp = torch.log_softmax(old_logits, -1).gather(1, actions[:, None]).squeeze(1)

    def evaluate():
        logp = torch.log_softmax(net(obs), -1).gather(1, actions[:, None]).squeeze(1)
        return trust_region_surrogate(logp, old_logp, adv), mean_kl_old_new(net, obs, old_logits)

    return net, evaluate


@pytest.mark.parametrize("max_kl", [float("inf"), float("nan"), 0.0, -0.01, "0.01"])
def test_bad_max_kl_is_refused_by_name(max_kl):
    net, evaluate = _categorical_problem()
    params = list(net.parameters())
    before = get_flat_params(params)
    with pytest.raises(ValueError, match="max_kl"):
        trust_region_step(params, evaluate, max_kl=max_kl)
    with pytest.raises(ValueError, match="max_kl"):
        line_search(params, torch.ones_like(before), evaluate, 0.0, max_kl=max_kl)
    assert torch.equal(get_flat_params(params), before)


def test_parameters_are_restored_when_evaluate_raises_in_the_line_search():
    net, evaluate = _categorical_problem()
    params = list(net.parameters())
    before = get_flat_params(params)
    calls = []

    def failing():
        if calls:  # the line search's first trial
            raise RuntimeError("simulator crashed")
        calls.append(1)
        return evaluate()

    with pytest.raises(RuntimeError, match="simulator crashed"):
        trust_region_step(params, failing, max_kl=0.01)
    assert torch.equal(get_flat_params(params), before)


@pytest.mark.parametrize("bad", ["nan_kl", "inf_surrogate", "nan_surrogate"])
def test_non_finite_trial_values_are_never_accepted(bad):
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def evaluate():
        surrogate, kl = w.sum(), (w**2).sum()
        if bad == "nan_kl":
            kl = kl * float("nan")
        elif bad == "inf_surrogate":
            surrogate = surrogate * float("inf")
        else:
            surrogate = surrogate * float("nan")
        return surrogate, kl

    result = line_search([w], torch.ones(2, dtype=torch.float64), evaluate, 0.0, max_kl=10.0, max_iter=3)
    assert not result.accepted and result.kl == 0.0
    assert torch.equal(w.detach(), torch.zeros(2, dtype=torch.float64))


def test_surrogate_without_a_graph_is_a_clear_error():
    net, evaluate = _categorical_problem()
    params = list(net.parameters())

    def no_graph():
        with torch.no_grad():
            return evaluate()

    with pytest.raises(ValueError, match="surrogate does not depend on params"):
        trust_region_step(params, no_graph, max_kl=0.01)
    other = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="surrogate does not depend on params: none of the 1 parameters"):
        trust_region_step([other], evaluate, max_kl=0.01)
    with pytest.raises(ValueError, match="kl does not depend on params"):
        trust_region_step(params, lambda: (evaluate()[0], torch.zeros(())), max_kl=0.01)


def test_non_finite_gradient_and_fisher_product_are_named():
    net, evaluate = _categorical_problem()
    params = list(net.parameters())
    before = get_flat_params(params)
    with pytest.raises(ValueError, match="surrogate"):
        trust_region_step(params, lambda: (evaluate()[0] * float("nan"), evaluate()[1]), max_kl=0.01)
    with pytest.raises(ValueError, match=r"conjugate_gradient.*Fisher-vector product is not finite"):
        trust_region_step(params, evaluate, max_kl=0.01, fvp=lambda v: v * float("nan"))
    assert torch.equal(get_flat_params(params), before)


def test_no_curvature_means_no_step_not_nan():
    net, evaluate = _categorical_problem()
    params = list(net.parameters())
    before = get_flat_params(params)
    result = trust_region_step(params, evaluate, max_kl=0.01, cg_damping=0.0, fvp=lambda v: torch.zeros_like(v))
    assert not result.accepted and result.steps_tried == 0
    assert torch.equal(get_flat_params(params), before)


def test_initial_values_skip_the_first_evaluation():
    net, evaluate = _categorical_problem()
    calls = []

    def counted():
        calls.append(1)
        return evaluate()

    result = trust_region_step(list(net.parameters()), counted, max_kl=0.01, initial=evaluate())
    assert result.accepted and len(calls) == result.steps_tried  # only the line search called it


def test_flat_params_are_torch_utils_and_copies_keep_storage():
    net = tiny_policy()
    params = list(net.parameters())
    torch.testing.assert_close(get_flat_params(params), torch.nn.utils.parameters_to_vector(params).detach())
    pointers = [p.data_ptr() for p in params]
    set_flat_params(params, get_flat_params(params) + 1.0)
    assert [p.data_ptr() for p in params] == pointers  # copied in place (vector_to_parameters would rebind .data)


# ----------------------------------------------------------------------------------------------------------------------
# Surrogate, joint KL, actor parameters
# ----------------------------------------------------------------------------------------------------------------------
def test_trust_region_surrogate_is_the_mean_ratio_times_advantage():
    g = torch.Generator().manual_seed(0)
    logp, old, adv = torch.randn(6, generator=g), torch.randn(6, generator=g), torch.randn(6, generator=g)
    torch.testing.assert_close(trust_region_surrogate(logp, old, adv), (torch.exp(logp - old) * adv).mean())
    loss, _ = clipped_surrogate_loss(logp, old, adv, None)
    torch.testing.assert_close(trust_region_surrogate(logp, old, adv), -loss.mean())
    mask = torch.tensor([True, False, True, True, False, False])
    torch.testing.assert_close(trust_region_surrogate(logp, old, adv, mask), (torch.exp(logp - old) * adv)[mask].mean())
    assert trust_region_surrogate(logp, old, adv, torch.zeros(6, dtype=torch.bool)) == 0.0
    # Unchecked at trial parameters: a line search must see inf, not an exception
    assert torch.isinf(trust_region_surrogate(torch.tensor([200.0]), torch.zeros(1), torch.ones(1)))


def test_joint_kl_sums_components_and_action_dims_and_averages_the_batch():
    g = torch.Generator().manual_seed(0)
    b = 5
    old = [Categorical(logits=torch.randn(b, 3, generator=g)), Normal(torch.randn(b, 2, generator=g), torch.rand(b, 2) + 0.5)]
    new = [Categorical(logits=torch.randn(b, 3, generator=g)), Normal(torch.randn(b, 2, generator=g), torch.rand(b, 2) + 0.5)]
    per_sample = kl_divergence(old[0], new[0]) + kl_divergence(old[1], new[1]).sum(-1)
    torch.testing.assert_close(joint_kl(old, new, reduction="none"), per_sample)
    torch.testing.assert_close(joint_kl(old, new), per_sample.mean())
    mask = torch.tensor([True, True, False, True, False])
    torch.testing.assert_close(joint_kl(old, new, mask=mask), per_sample[mask].mean())
    # [T, N] batches, Independent wrappers, Bernoulli
    t_n = [Independent(Normal(torch.zeros(4, 3, 2), torch.ones(4, 3, 2)), 1), Bernoulli(logits=torch.zeros(4, 3, 2))]
    t_n_new = [Independent(Normal(torch.ones(4, 3, 2), torch.ones(4, 3, 2)), 1), Bernoulli(logits=torch.ones(4, 3, 2))]
    assert joint_kl(t_n, t_n_new, batch_dims=2, reduction="none").shape == (4, 3)
    torch.testing.assert_close(
        joint_kl(t_n, t_n_new, batch_dims=2),
        2 * 0.5 + 2 * kl_divergence(Bernoulli(logits=torch.zeros(())), Bernoulli(logits=torch.ones(()))),
    )
    assert joint_kl(old, [Categorical(logits=d.logits) if isinstance(d, Categorical) else d for d in old]) < 1e-6


def test_action_kl_mean_is_sb3_contribs_reduction_and_joint_is_the_sum():
    g = torch.Generator().manual_seed(1)
    b, d = 6, 3
    old = [Normal(torch.randn(b, d, generator=g), torch.rand(b, d, generator=g) + 0.5)]
    new = [Normal(torch.randn(b, d, generator=g), torch.rand(b, d, generator=g) + 0.5)]
    # sb3-contrib: kl_divergence(...).mean() over the [B, d] tensor of per-dimension KLs
    torch.testing.assert_close(action_kl(old, new), kl_divergence(old[0], new[0]).mean())
    torch.testing.assert_close(action_kl(old, new, kl_reduction="joint"), d * action_kl(old, new))
    torch.testing.assert_close(action_kl(old, new, kl_reduction="joint"), joint_kl(old, new))
    # Independent (TorchRL's diagonal Gaussians) and Bernoulli (MultiBinary): averaged over their dimensions too
    wrapped_old, wrapped_new = [Independent(old[0], 1)], [Independent(new[0], 1)]
    torch.testing.assert_close(action_kl(wrapped_old, wrapped_new), action_kl(old, new))
    bern_old, bern_new = Bernoulli(logits=torch.randn(b, 4, generator=g)), Bernoulli(logits=torch.randn(b, 4, generator=g))
    torch.testing.assert_close(action_kl([bern_old], [bern_new]), kl_divergence(bern_old, bern_new).mean())
    # MultiDiscrete sub-actions add up in both conventions (as sb3-contrib sums them)
    cats = [Categorical(logits=torch.randn(b, 3, generator=g)) for _ in range(4)]
    per_sub = [kl_divergence(cats[i], cats[i + 2]) for i in range(2)]
    for kl_reduction in ("mean", "joint"):
        torch.testing.assert_close(action_kl(cats[:2], cats[2:], kl_reduction=kl_reduction), sum(per_sub).mean())
    assert [action_dims(x) for x in (old[0], wrapped_old[0], bern_old, cats[0])] == [3, 3, 4, 1]
    assert action_dims(torch.distributions.OneHotCategorical(logits=torch.zeros(b, 5))) == 1
    with pytest.raises(ValueError, match="kl_reduction"):
        action_kl(old, new, kl_reduction="sum")


def test_joint_kl_bad_input():
    c = [Categorical(logits=torch.zeros(4, 2))]
    with pytest.raises(ValueError, match="one new distribution per old one"):
        joint_kl(c, c + c)
    with pytest.raises(ValueError, match="batch shapes"):
        joint_kl([*c, Categorical(logits=torch.zeros(3, 2))], [*c, Categorical(logits=torch.zeros(3, 2))])
    with pytest.raises(ValueError, match="reduction"):
        joint_kl(c, c, reduction="sum")
    with pytest.raises(ValueError, match="No closed-form KL"):
        joint_kl([torch.distributions.Cauchy(torch.zeros(4), 1.0)], [Normal(torch.zeros(4), 1.0)])
    estimate = joint_kl([Normal(torch.zeros(4), 1.0)], [torch.distributions.Cauchy(torch.zeros(4), 1.0)], num_samples=64)
    assert torch.isfinite(estimate) and estimate > 0


def test_reachable_parameters_follows_the_graph():
    value, other = nn.Linear(3, 2), nn.Linear(3, 2)
    out = value(torch.ones(1, 3)).tanh().sum() * 2
    assert reachable_parameters([out], [*other.parameters(), *value.parameters()]) == list(value.parameters())
    assert reachable_parameters([torch.ones(2)], list(value.parameters())) == []
    leaf = nn.Parameter(torch.ones(2))
    assert reachable_parameters([leaf], [leaf, *value.parameters()]) == [leaf]


@pytest.mark.parametrize("deterministic", [False, True])
def test_rollout_sampling_equals_torch_distributions_bit_for_bit(deterministic):
    g = torch.Generator().manual_seed(0)
    logits, mean = torch.randn(4, 3, 5, generator=g), torch.randn(7, 2, generator=g)
    std = torch.rand(7, 2, generator=g) + 0.1
    for batch in (logits, logits[0]):  # [*B, K] and a rollout step's [B, K] (its own path)
        torch.manual_seed(1)
        actions, log_prob = sample_categorical(batch, deterministic)
        torch.manual_seed(1)
        reference = Categorical(logits=batch)
        expected = reference.probs.argmax(-1) if deterministic else reference.sample()
        assert torch.equal(actions, expected) and torch.equal(log_prob, reference.log_prob(expected))
    torch.manual_seed(2)
    actions, log_prob = sample_diag_gaussian(mean, std, deterministic)
    torch.manual_seed(2)
    normal = Normal(mean, std)
    expected = normal.mean if deterministic else normal.rsample()
    assert torch.equal(actions, expected) and torch.equal(log_prob, normal.log_prob(expected).sum(-1))
    assert torch.equal(diag_gaussian_log_prob(actions, mean, std), normal.log_prob(actions).sum(-1))
