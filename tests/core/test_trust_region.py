"""Trust-region pieces of TRPO (seed 2.4): Fisher-vector products, conjugate gradient, line search."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pg_extras import (
    conjugate_gradient,
    fisher_vector_product_fn,
    get_flat_params,
    line_search,
    set_flat_params,
    trust_region_step,
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
