"""Gauss-Newton Fisher-vector products (``gauss_newton_fvp_fn`` / ``distribution_fvp_fn`` / ``mlp_fvp_fn``) against
explicit Hessians.

At ``theta = theta_old`` the Hessian of the mean ``KL(pi_old || pi_theta)`` is the Fisher matrix ``J^T M J``; the fast
product must equal the explicit Hessian (``torch.autograd.functional.hessian`` of the KL as a function of the flat
parameters) times ``v``, for every supported distribution, and plugging it into ``trust_region_step`` must not change
the step beyond float noise.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence
from torch.func import functional_call

from pg_extras import (
    conjugate_gradient,
    distribution_fisher,
    distribution_fvp_fn,
    fisher_vector_product_fn,
    gauss_newton_fvp_fn,
    get_flat_params,
    mlp_fvp_fn,
    trust_region_step,
)
from pg_extras.trust_region import _conjugate_gradient

torch.set_num_threads(1)
DTYPE = torch.float64


class TinyPolicy(nn.Module):
    """A tanh MLP with a ``head`` output of size ``out`` and a state-independent ``log_std`` parameter."""

    def __init__(self, obs_dim: int = 3, out: int = 4, act_dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(obs_dim, 5), nn.Tanh(), nn.Linear(5, 5), nn.Tanh())
        self.head = nn.Linear(5, out)
        self.log_std = nn.Parameter(0.3 * torch.randn(act_dim))
        self.double()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(obs))


def _hessian_of_mean_kl(
    net: nn.Module, make_dists, obs: torch.Tensor, reduce_kl, batch_dims: int = 1, kl_reduction: str = "joint"
) -> torch.Tensor:
    """Explicit Hessian of ``reduce_kl(KL(pi_old || pi_theta))`` in the flat parameters, at ``theta_old``.

    ``"joint"``: the KL of the joint distribution, each component's KL summed over its dimensions after the first
    ``batch_dims``. ``"mean"``: sb3-contrib's ``kl_divergence(...).mean()`` per component (averaged over those
    dimensions, and over the event dimension of an ``Independent``), components summed.
    """
    names = [n for n, _ in net.named_parameters()]
    params = list(net.parameters())
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
    with torch.no_grad():
        old = make_dists(net, obs)

    def kl_of_flat(flat: torch.Tensor) -> torch.Tensor:
        chunks = [c.view(s) for c, s in zip(flat.split(sizes), shapes, strict=True)]
        state = dict(zip(names, chunks, strict=True))
        new = functional_call_dists(net, state, make_dists, obs)
        total = 0.0
        for p, q in zip(old, new, strict=True):
            kl = kl_divergence(p, q)
            if kl_reduction == "joint":
                total = total + kl.reshape(*kl.shape[:batch_dims], -1).sum(-1)
            else:
                events = p.event_shape.numel() if isinstance(p, Independent) else 1
                total = total + kl.reshape(*kl.shape[:batch_dims], -1).mean(-1) / events
        return reduce_kl(total)

    return torch.autograd.functional.hessian(kl_of_flat, get_flat_params(params))


def functional_call_dists(net: nn.Module, state: dict, make_dists, obs: torch.Tensor):
    class _Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor):
            return make_dists(self.net, x)

    return functional_call(_Call(), {f"net.{k}": v for k, v in state.items()}, (obs,))


def categorical(net, obs):
    return [Categorical(logits=net(obs))]


def gaussian(net, obs):  # diagonal Gaussian, state-independent std (SB3's DiagGaussianDistribution)
    mean = net(obs)
    return [Normal(mean, torch.ones_like(mean) * net.log_std.exp())]


def gaussian_state_std(net, obs):  # std from the network too (softplus head), wrapped in Independent
    out = net(obs)
    return [Independent(Normal(out[:, :2], nn.functional.softplus(out[:, 2:]) + 0.1), 1)]


def multi(net, obs):  # MultiDiscrete (2 x Categorical(2)) + MultiBinary(2) on one head of size 6
    out = net(obs)
    return [Categorical(logits=out[:, :2]), Categorical(logits=out[:, 2:4]), Bernoulli(logits=out[:, 4:])]


def _per_sample_sum(kl: torch.Tensor) -> torch.Tensor:
    return kl.reshape(kl.shape[0], -1).sum(1) if kl.dim() > 1 else kl


CASES = {
    "categorical": (categorical, 4),
    "diag_gaussian": (gaussian, 2),
    "gaussian_state_dependent_std": (gaussian_state_std, 4),
    "multidiscrete_multibinary": (multi, 6),
}


@pytest.mark.parametrize("kl_reduction", ["mean", "joint"])
@pytest.mark.parametrize("case", list(CASES))
def test_distribution_fvp_equals_explicit_hessian_of_mean_kl(case, kl_reduction):
    make_dists, out = CASES[case]
    net = TinyPolicy(out=out)
    obs = torch.randn(16, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    params = list(net.parameters())
    hessian = _hessian_of_mean_kl(net, make_dists, obs, lambda kl: kl.mean(), kl_reduction=kl_reduction)
    assert hessian.abs().max() > 1e-3  # not trivially zero
    fvp = distribution_fvp_fn(make_dists(net, obs), params, damping=0.1, kl_reduction=kl_reduction)
    assert fvp is not None
    for seed in range(3):
        v = torch.randn(hessian.shape[0], dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), hessian @ v + 0.1 * v, rtol=1e-9, atol=1e-11)


def test_distribution_fvp_equals_double_backward_product():
    net = TinyPolicy(out=4)
    obs = torch.randn(32, 3, dtype=DTYPE)
    params = list(net.parameters())
    dists = categorical(net, obs)
    old = Categorical(logits=dists[0].logits.detach())
    slow = fisher_vector_product_fn(kl_divergence(old, dists[0]).mean(), params, damping=0.01)
    fast = distribution_fvp_fn(dists, params, damping=0.01)
    v = torch.randn(get_flat_params(params).numel(), dtype=DTYPE)
    torch.testing.assert_close(fast(v), slow(v))
    torch.testing.assert_close(fast(2.0 * v), 2.0 * fast(v))  # linear, reusable (graph retained)


def test_weights_and_batch_dims_give_the_masked_mean_kl_hessian():
    net = TinyPolicy(out=4)
    obs = torch.randn(4, 5, 3, dtype=DTYPE)  # [T, N] batch
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) > 0.3
    weights = mask.to(DTYPE) / mask.sum()
    hessian = _hessian_of_mean_kl(net, categorical, obs, lambda kl: (kl * weights).sum(), batch_dims=2)
    fvp = distribution_fvp_fn(categorical(net, obs), list(net.parameters()), batch_dims=2, weights=weights)
    v = torch.randn(hessian.shape[0], dtype=DTYPE)
    torch.testing.assert_close(fvp(v), hessian @ v)
    # batch_dims=2 without weights: the plain mean over both batch dimensions
    hessian = _hessian_of_mean_kl(net, categorical, obs, lambda kl: kl.mean(), batch_dims=2)
    fvp = distribution_fvp_fn(categorical(net, obs), list(net.parameters()), batch_dims=2)
    torch.testing.assert_close(fvp(v), hessian @ v)


def test_gauss_newton_fvp_is_jt_m_j_with_explicit_jacobian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    obs = torch.randn(6, 3, dtype=DTYPE)
    params = list(net.parameters())
    flat0 = get_flat_params(params)
    names = [n for n, _ in net.named_parameters()]
    sizes, shapes = [p.numel() for p in params], [p.shape for p in params]

    def out_of_flat(flat):
        chunks = [c.view(s) for c, s in zip(flat.split(sizes), shapes, strict=True)]
        return functional_call(net, dict(zip(names, chunks, strict=True)), (obs,)).reshape(-1)

    jac = torch.autograd.functional.jacobian(out_of_flat, flat0)  # [12, P]
    a = torch.randn(12, 12, dtype=DTYPE)
    m = a @ a.T  # a full symmetric PSD metric on the outputs
    fvp = gauss_newton_fvp_fn([net(obs)], params, lambda u: [(m @ u[0].reshape(-1)).view(6, 2)], damping=0.5)
    v = torch.randn(flat0.numel(), dtype=DTYPE)
    torch.testing.assert_close(fvp(v), jac.T @ (m @ (jac @ v)) + 0.5 * v)


def test_unused_parameters_and_constant_outputs():
    net = TinyPolicy(out=2)
    unused = nn.Parameter(torch.ones(3, dtype=DTYPE))
    obs = torch.randn(8, 3, dtype=DTYPE)
    mean = net(obs)
    fixed_std = Normal(mean, torch.full_like(mean, 0.5))  # scale needs no grad: skipped
    fvp = distribution_fvp_fn([fixed_std], [*net.parameters(), unused])
    v = torch.randn(get_flat_params([*net.parameters(), unused]).numel(), dtype=DTYPE)
    out = fvp(v)
    assert torch.equal(out[-3:], torch.zeros(3, dtype=DTYPE))  # unused parameter: zero rows
    assert next(net.named_parameters())[0] == "log_std"
    assert torch.equal(out[:2], torch.zeros(2, dtype=DTYPE))  # log_std does not reach this distribution
    assert out[2:-3].abs().max() > 0


def test_unsupported_distribution_and_bad_input():
    net = TinyPolicy(out=2)
    obs = torch.randn(8, 3, dtype=DTYPE)
    params = list(net.parameters())
    beta = torch.distributions.Beta(net(obs).exp(), torch.ones(8, 2, dtype=DTYPE))
    assert distribution_fvp_fn([beta], params) is None
    with pytest.raises(ValueError, match="weights"):
        distribution_fvp_fn(categorical(net, obs), params, weights=torch.ones(3, dtype=DTYPE))
    with pytest.raises(ValueError, match="damping"):
        distribution_fvp_fn(categorical(net, obs), params, damping=-1.0)
    with pytest.raises(ValueError, match="batch_dims"):
        distribution_fvp_fn(categorical(net, obs), params, batch_dims=-1)
    with pytest.raises(ValueError, match="batch shapes"):
        distribution_fvp_fn([*categorical(net, obs), *categorical(net, obs[:4])], params)
    with torch.no_grad():
        no_graph = categorical(net, obs)
    with pytest.raises(ValueError, match="autograd"):
        distribution_fvp_fn(no_graph, params)
    with pytest.raises(ValueError, match="outputs"):
        gauss_newton_fvp_fn([torch.ones(2)], params, lambda u: u)


def test_conjugate_gradient_tracks_the_product_of_its_solution():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(8, 8, generator=g, dtype=DTYPE)
    a = m @ m.T + 0.1 * torch.eye(8, dtype=DTYPE)
    b = torch.randn(8, generator=g, dtype=DTYPE)
    for iters in (1, 3, 20):
        x, ax = _conjugate_gradient(lambda v: a @ v, b, iters, 1e-20)
        torch.testing.assert_close(ax, a @ x)
        torch.testing.assert_close(x, conjugate_gradient(lambda v: a @ v, b, max_iter=iters, residual_tol=1e-20))


@pytest.mark.parametrize("make_dists,out", [(categorical, 4), (gaussian, 2)])
def test_trust_region_step_with_fast_fvp_matches_double_backward(make_dists, out):
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(64, 3, dtype=DTYPE, generator=g)
    adv = torch.randn(64, dtype=DTYPE, generator=g)
    results, thetas = [], []
    for fast in (False, True):
        net = TinyPolicy(out=out, seed=5)
        params = list(net.parameters())
        dists = make_dists(net, obs)
        old = [_detached(d) for d in dists]
        torch.manual_seed(7)
        actions = [d.sample() for d in old]
        old_logp = sum(_logp(d, a) for d, a in zip(old, actions, strict=True)).detach()
        calls: list[int] = []

        def evaluate(net=net, old=old, actions=actions, old_logp=old_logp):
            new = make_dists(net, obs)
            logp = sum(_logp(d, a) for d, a in zip(new, actions, strict=True))
            kl = sum(_per_sample_sum(kl_divergence(p, q)) for p, q in zip(old, new, strict=True)).mean()
            return (torch.exp(logp - old_logp) * adv).mean(), kl

        fvp = None
        if fast:
            base = distribution_fvp_fn(dists, params, kl_reduction="joint")  # evaluate()'s KL is the joint one

            def fvp(v, base=base, calls=calls):
                calls.append(1)
                return base(v)

        results.append(trust_region_step(params, evaluate, max_kl=0.01, cg_max_steps=7, cg_damping=0.01, fvp=fvp))
        thetas.append(get_flat_params(params))
        if fast:
            assert len(calls) == 7  # cg_max_steps products, no extra one for the step length
    slow, fast = results
    assert slow.accepted and fast.accepted and slow.steps_tried == fast.steps_tried
    torch.testing.assert_close(thetas[1], thetas[0], rtol=1e-9, atol=1e-12)
    assert abs(slow.kl - fast.kl) < 1e-10 and fast.kl <= 0.01


def _detached(d):
    return Categorical(logits=d.logits.detach()) if isinstance(d, Categorical) else Normal(d.loc.detach(), d.scale.detach())


def _logp(d, a):
    return _per_sample_sum(d.log_prob(a))


# ----------------------------------------------------------------------------------------------------------------------
# MlpLinearization: J t and J^T u without autograd
# ----------------------------------------------------------------------------------------------------------------------
def _random_mlp(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    dims, acts = [3, 6, 5, 2], ["tanh", "relu", None]
    layers = []
    for i, act in enumerate(acts):
        weight = torch.randn(dims[i + 1], dims[i], dtype=DTYPE, generator=g)
        bias = None if i == 1 else torch.randn(dims[i + 1], dtype=DTYPE, generator=g)  # one layer without bias
        layers.append((weight, bias, act))
    return layers, torch.randn(7, 3, dtype=DTYPE, generator=g)


def _mlp_of(flat_params, layers, x):
    out, offset = x, 0
    for weight, bias, act in layers:
        w = flat_params[offset : offset + weight.numel()].view_as(weight)
        offset += weight.numel()
        b = None
        if bias is not None:
            b = flat_params[offset : offset + bias.numel()]
            offset += bias.numel()
        out = nn.functional.linear(out, w, b)
        out = torch.tanh(out) if act == "tanh" else torch.relu(out) if act == "relu" else out
    return out


def test_mlp_linearization_matches_autograd_jvp_and_vjp():
    from pg_extras import MlpLinearization

    layers, x = _random_mlp()
    flat = torch.cat([t.reshape(-1) for w, b, _ in layers for t in (w, b) if t is not None])
    mlp = MlpLinearization(layers, x)
    torch.testing.assert_close(mlp.output, _mlp_of(flat, layers, x))
    jac = torch.autograd.functional.jacobian(lambda p: _mlp_of(p, layers, x).reshape(-1), flat)  # [7 * 2, P]
    t = torch.randn(flat.numel(), dtype=DTYPE)
    tangents, offset = [], 0
    for w, b, _ in layers:
        dw = t[offset : offset + w.numel()].view_as(w)
        offset += w.numel()
        db = None
        if b is not None:
            db = t[offset : offset + b.numel()]
            offset += b.numel()
        tangents.append((dw, db))
    torch.testing.assert_close(mlp.jvp(tangents).reshape(-1), jac @ t)
    u = torch.randn(7, 2, dtype=DTYPE)
    grads = torch.cat([g.reshape(-1) for pair in mlp.vjp(u) for g in pair if g is not None])
    torch.testing.assert_close(grads, jac.T @ u.reshape(-1))
    assert mlp.vjp(u)[1][1] is None  # no bias, no bias gradient


def test_mlp_linearization_bad_input():
    from pg_extras import MlpLinearization

    layers, x = _random_mlp()
    with pytest.raises(ValueError, match="activation"):
        MlpLinearization([(layers[0][0], None, "gelu")], x)
    with pytest.raises(ValueError, match="features"):
        MlpLinearization([layers[1]], x)
    with pytest.raises(ValueError, match=r"\[B, in\]"):
        MlpLinearization(layers, x[0])
    with pytest.raises(ValueError, match="layers"):
        MlpLinearization([], x)
    with pytest.raises(ValueError, match="tangents"):
        MlpLinearization(layers, x).jvp([])


def test_new_docstring_examples_run():
    import doctest

    import pg_extras.mlp
    import pg_extras.policy_ops
    import pg_extras.trust_region

    for module in (pg_extras.mlp, pg_extras.policy_ops, pg_extras.trust_region):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------------------------------------------------
# mlp_fvp_fn: the Gauss-Newton product of an nn.Sequential MLP policy through MlpLinearization
# ----------------------------------------------------------------------------------------------------------------------
def _mlp(net: TinyPolicy) -> list[nn.Module]:
    return [net.body, net.head]


@pytest.mark.parametrize("kl_reduction", ["mean", "joint"])
@pytest.mark.parametrize("case", list(CASES))
def test_mlp_fvp_equals_explicit_hessian_of_mean_kl(case, kl_reduction):
    make_dists, out = CASES[case]
    net = TinyPolicy(out=out)
    obs = torch.randn(16, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    params = list(net.parameters())
    fisher = distribution_fisher(make_dists(net, obs), kl_reduction=kl_reduction)
    fvp = mlp_fvp_fn(_mlp(net), obs, params, fisher, damping=0.1)
    if case == "gaussian_state_dependent_std":  # std = softplus(MLP output): not an MLP output itself
        assert fvp is None
        return
    assert fvp is not None
    hessian = _hessian_of_mean_kl(net, make_dists, obs, lambda kl: kl.mean(), kl_reduction=kl_reduction)
    for seed in range(3):
        v = torch.randn(hessian.shape[0], dtype=DTYPE, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(fvp(v), hessian @ v + 0.1 * v, rtol=1e-9, atol=1e-11)


def test_mlp_fvp_with_batch_dims_weights_and_fixed_parameters():
    net = TinyPolicy(out=4)
    net.body[0].weight.requires_grad_(False)  # held fixed: not in params
    params = [p for p in net.parameters() if p.requires_grad]
    obs = torch.randn(4, 5, 3, dtype=DTYPE)  # [T, N] batch
    weights = torch.rand(4, 5, dtype=DTYPE)
    weights = weights / weights.sum()
    dists = categorical(net, obs)
    fast = mlp_fvp_fn(_mlp(net), obs, params, distribution_fisher(dists, batch_dims=2, weights=weights))
    slow = distribution_fvp_fn(dists, params, batch_dims=2, weights=weights)
    v = torch.randn(sum(p.numel() for p in params), dtype=DTYPE)
    torch.testing.assert_close(fast(v), slow(v))


def test_fisher_with_a_mask_is_the_hessian_of_the_masked_mean_kl():
    """``distribution_fisher(mask=m)``: the Hessian of the KL averaged over the valid steps only (as action_kl)."""
    net = TinyPolicy(out=4)
    obs = torch.randn(4, 5, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(2))  # [T, N] batch
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(3)) > 0.4
    params = list(net.parameters())
    fvp = mlp_fvp_fn(_mlp(net), obs, params, distribution_fisher(categorical(net, obs), batch_dims=2, mask=mask))
    hessian = _hessian_of_mean_kl(net, categorical, obs, lambda kl: kl[mask].mean(), batch_dims=2)
    v = torch.randn(hessian.shape[0], dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(fvp(v), hessian @ v, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="mask or weights"):
        distribution_fisher(categorical(net, obs), batch_dims=2, weights=mask.double(), mask=mask)


def test_mlp_fvp_refuses_what_it_cannot_prove():
    net = TinyPolicy(out=2)
    obs = torch.randn(8, 3, dtype=DTYPE)
    params = list(net.parameters())

    def fvp_for(dists, mlp=None, inputs=obs, params=params):
        return mlp_fvp_fn(_mlp(net) if mlp is None else mlp, inputs, params, distribution_fisher(dists))

    assert fvp_for(gaussian(net, obs)) is not None
    gelu = nn.Sequential(nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 5), nn.Tanh())
    assert fvp_for(gaussian(net, obs), mlp=[gelu.double(), net.head]) is None  # not an MLP of known activations
    assert fvp_for(gaussian(net, obs), inputs=obs.clone().requires_grad_()) is None  # inputs with a graph
    assert fvp_for(gaussian(net, obs), mlp=[net.head]) is None  # not the network that made the distribution
    z = net(obs)
    shifted = Normal(z - z.logsumexp(-1, keepdim=True), net.log_std.exp().expand_as(z))  # M of a mean sees shifts
    assert fvp_for([shifted]) is None
    extra = nn.Parameter(torch.zeros(2, dtype=DTYPE))  # a parameter outside the MLP moves the mean
    assert fvp_for([Normal(z + extra, net.log_std.exp().expand_as(z))], params=[*params, extra]) is None
    coupled = Normal(z, net.log_std.exp() + 0.0 * z.sum())  # the std depends on the MLP too
    assert fvp_for([coupled]) is None
    handle = net.head.register_forward_hook(lambda module, args, out: 2.0 * out)  # a hook that changes the output
    try:
        assert fvp_for(gaussian(net, obs)) is None
    finally:
        handle.remove()


def test_mlp_layers_reads_sequential_mlps_only():
    from pg_extras import mlp_layers

    lin = nn.Linear(3, 4, bias=False)
    layers = mlp_layers([nn.Sequential(lin, nn.ReLU(), nn.Identity()), nn.Sequential(nn.Sequential(nn.Linear(4, 2)))])
    assert [(tuple(w.shape), b is None, act) for w, b, act in layers] == [((4, 3), True, "relu"), ((2, 4), False, None)]
    assert layers[0][0] is lin.weight  # the parameters themselves (no copy)

    class MyLinear(nn.Linear):
        pass

    class MySequential(nn.Sequential):  # e.g. TorchRL's MLP: traversed (mlp_fvp_fn checks the output)
        pass

    assert len(mlp_layers(MySequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))) == 2

    for bad in (
        nn.Sequential(nn.Tanh(), nn.Linear(3, 4)),  # an activation before any layer
        nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Tanh()),  # two activations in a row
        nn.Sequential(MyLinear(3, 4)),  # a subclass may override forward
        nn.Sequential(nn.Linear(3, 4), nn.Dropout()),
        nn.Sequential(),
    ):
        assert mlp_layers(bad) is None


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
def test_mlp_forward_equals_the_modules(activation):
    # the rollout step's functional actor: the same output as the modules, bit for bit (with and without biases)
    from pg_extras import mlp_forward, mlp_layers

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 8), activation(), nn.Linear(8, 8, bias=False), activation(), nn.Linear(8, 3))
    x = torch.randn(7, 5)
    assert torch.equal(mlp_forward(mlp_layers(net), x), net(x))
    net[0].weight.data.mul_(2.0)  # the layers hold the parameters by reference: a change is seen
    assert torch.equal(mlp_forward(mlp_layers(net), x), net(x))
