"""Trust-region machinery for TRPO (docs/maths.md#4-importance-ratio-and-trpo; Schulman et al. 2015, appendix C,
https://arxiv.org/abs/1502.05477).

* flat-parameter helpers (``torch.nn.utils.parameters_to_vector``),
* Fisher-vector products ``F v = grad((grad KL) . v) + damping v`` of the mean KL (double-backward trick),
* the cheaper Gauss-Newton form ``F v = J^T M J v`` (``J`` the Jacobian of the distribution parameters, ``M`` the Fisher
  of the distribution in its own parameters), exact at ``theta = theta_old`` (Martens 2014, "New insights and
  perspectives on the natural gradient method", sections 9-10), for torch Categorical / Bernoulli / Normal policies,
  and :func:`mlp_fvp_fn`, the same product without autograd for MLP policies (any framework's ``nn.Linear`` chain),
* conjugate gradient for ``x ~ F^-1 g``,
* the step ``sqrt(2 delta / x^T F x) x`` and a backtracking line search that accepts only a step that
  improves the surrogate and keeps ``KL <= delta`` (both finite), and otherwise restores the parameters, also when
  the evaluation raises (docs/maths.md#backtracking-line-search-and-restore, docs/maths.md#11-numerical-robustness).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal
from torch.nn.utils import parameters_to_vector

from pg_extras.mlp import MlpLinearization, mlp_layers
from pg_extras.policy_ops import DEFAULT_KL_REDUCTION, KL_REDUCTIONS, action_dims, reachable_parameters
from pg_extras.validation import check_choice, check_finite, check_float, check_nonnegative

__all__ = [
    "TrustRegionResult",
    "TrustRegionSettings",
    "conjugate_gradient",
    "distribution_fisher",
    "distribution_fvp_fn",
    "fisher_vector_product_fn",
    "flat_grad",
    "gauss_newton_fvp_fn",
    "get_flat_params",
    "line_search",
    "mlp_fvp_fn",
    "set_flat_params",
    "trust_region_step",
]


def get_flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.nn.utils.parameters_to_vector(params)``, detached: one 1-D copy of the parameters."""
    return parameters_to_vector(params).detach()


def set_flat_params(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy the 1-D tensor ``flat`` into ``params`` in place (inverse of :func:`get_flat_params`).

    Unlike ``torch.nn.utils.vector_to_parameters``, which rebinds each ``param.data`` to a view of ``flat`` (after a
    line search the parameters would alias slices of the last trial vector), this copies into the parameters' own
    storage, so optimizers, compiled modules and anything else holding that storage stay valid.

    Example::

        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> set_flat_params([w], torch.tensor([1.0, 2.0]))
        >>> w.data
        tensor([1., 2.])
    """
    params = list(params)
    sizes = [p.numel() for p in params]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(
            f"flat has shape {tuple(flat.shape)} but the parameters have {sum(sizes)} elements: pass a 1-D vector."
        )
    with torch.no_grad():
        for p, chunk in zip(params, flat.split(sizes), strict=True):
            p.copy_(chunk.view_as(p))


_FVP_HINT = (
    "the Fisher-vector product is not finite: the policy's outputs are NaN / inf at these parameters, or a "
    "distribution's Fisher overflows (a std near 0); check the observations (normalise them) and raise cg_damping"
)


def flat_grad(
    output: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = False, create_graph: bool = False
) -> torch.Tensor:
    """Gradient of a scalar ``output`` w.r.t. ``params`` as a 1-D tensor (zeros for unused parameters)."""
    grads = torch.autograd.grad(output, list(params), retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    return _flat(grads, params)


def fisher_vector_product_fn(
    kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``v -> H v + damping v`` with ``H`` the Hessian of the scalar mean ``kl`` w.r.t. ``params``.

    At ``theta = theta_old`` the Hessian of ``KL(pi_old || pi_theta)`` is the Fisher information matrix.
    The first derivative is built once (with a graph); each product costs one extra backward pass.

    Example::

        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> fvp = fisher_vector_product_fn((w**2).sum(), [w], damping=0.1)
        >>> fvp(torch.tensor([1.0, 0.0]))
        tensor([2.1000, 0.0000])
    """
    check_nonnegative("damping", damping)
    params = list(params)
    grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = flat_grad(grad_kl @ v.detach(), params, retain_graph=True)
        return hv + damping * v

    return fvp


def gauss_newton_fvp_fn(
    outputs: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    output_fisher: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]],
    damping: float = 0.0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``v -> J^T M J v + damping v``, the Gauss-Newton (generalised) Fisher-vector product.

    ``J = d outputs / d params`` is the Jacobian of the distribution parameters (e.g. logits, or mean and std) at the
    current parameters and ``M`` (``output_fisher``) the Hessian of the mean KL in those outputs. At
    ``theta = theta_old`` the gradient of the KL in the outputs is zero, so ``J^T M J`` *is* the Hessian of
    ``KL(pi_old || pi_theta)`` (= the Fisher matrix) that :func:`fisher_vector_product_fn` multiplies by double backward,
    at lower cost (about 25-30% less for a small MLP on a CPU): ``J v`` comes from a backward through the (linear in
    ``w``) graph of ``J^T w`` built once ("double-vjp" trick), and ``J^T u`` from one backward through the retained
    forward graph; the network's second-order terms, which vanish at ``theta_old``, are never formed. Without autograd
    overhead, see :class:`pg_extras.MlpLinearization`.

    :param outputs: tensors computed from ``params`` with a graph (the graph is retained across calls).
    :param params: the parameters ``theta``.
    :param output_fisher: ``[u_1, ...] -> [M_1 u, ...]``: the product of ``M`` with tangents shaped like ``outputs``
        (include the batch averaging of the mean KL in ``M``); must be symmetric positive semi-definite.
    :param damping: added ``damping * v``.
    :return: the product function on flat 1-D vectors (see :func:`get_flat_params`).

    Example::

        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> out = 3.0 * w  # J = 3 I
        >>> fvp = gauss_newton_fvp_fn([out], [w], lambda u: [2.0 * u[0]], damping=0.1)  # M = 2 I
        >>> fvp(torch.tensor([1.0, 0.0]))
        tensor([18.1000,  0.0000])
    """
    damping = check_nonnegative("damping", damping)  # type: ignore[assignment]
    params = list(params)
    outputs = [o for o in outputs if o.requires_grad]
    if not outputs:
        raise ValueError("outputs has no tensor that requires grad: compute them from params with autograd enabled.")
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    jvp, vjp = _jacobian_products(outputs, params)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        v = v.detach()
        mjv = list(output_fisher(jvp([c.view(s) for c, s in zip(v.split(sizes), shapes, strict=True)])))
        out = _flat(vjp(mjv), params)
        return out + damping * v if damping else out

    return fvp


def _jacobian_products(
    outputs: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> tuple[
    Callable[[Sequence[torch.Tensor]], list[torch.Tensor]], Callable[[Sequence[torch.Tensor]], Sequence[torch.Tensor | None]]
]:
    """``(jvp, vjp)`` of ``outputs`` in ``params`` by autograd, reusable (graphs retained).

    ``jvp(tangents per param) -> J v`` shaped like ``outputs``: a backward through the graph of ``J^T w``, which is
    linear in the dummy ``w`` and built once ("double-vjp" trick); ``vjp(cotangents) -> J^T u`` per parameter
    (``None`` for a parameter that no output reaches).
    """
    dummies = [torch.zeros_like(o, requires_grad=True) for o in outputs]
    jt_w = torch.autograd.grad(list(outputs), list(params), grad_outputs=dummies, create_graph=True, allow_unused=True)
    linked = [i for i, g in enumerate(jt_w) if g is not None and g.requires_grad]

    def jvp(tangents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not linked:
            return [torch.zeros_like(o) for o in outputs]
        grads = torch.autograd.grad(
            [jt_w[i] for i in linked],  # type: ignore[misc]
            dummies,
            grad_outputs=[tangents[i] for i in linked],
            retain_graph=True,
            allow_unused=True,
        )
        return [torch.zeros_like(o) if g is None else g for g, o in zip(grads, outputs, strict=True)]

    def vjp(cotangents: Sequence[torch.Tensor]) -> Sequence[torch.Tensor | None]:
        return torch.autograd.grad(
            list(outputs), list(params), grad_outputs=list(cotangents), retain_graph=True, allow_unused=True
        )

    return jvp, vjp


def _flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-parameter gradients as one 1-D tensor (zeros for ``None``)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])


def _unwrap(dist: Distribution) -> Distribution:
    """The base distribution of ``Independent`` wrappers (their reinterpreted dimensions are summed, as the KL's)."""
    while isinstance(dist, Independent):
        dist = dist.base_dist
    return dist


def _batch_weights(weights: torch.Tensor | None, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The batch-average weights of :func:`distribution_fisher`: ``weights``, or the mean over ``mask``'s valid steps."""
    if mask is None:
        return weights
    if weights is not None:
        raise ValueError("distribution_fisher: give mask or weights, not both.")
    return mask.to(dtype) / mask.sum().clamp(min=1)  # in the parameters' precision


def distribution_fisher(
    distributions: Sequence[Distribution],
    batch_dims: int = 1,
    weights: torch.Tensor | None = None,
    kl_reduction: str = DEFAULT_KL_REDUCTION,
    mask: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], list[torch.Tensor]]] | None:
    """The distribution parameters and the Fisher ``M`` of the mean KL in them: the ``M`` of ``J^T M J``.

    The constraint is ``mean over the batch of KL(pi_old(.|s) || pi_theta(.|s))`` as :func:`pg_extras.action_kl`
    reduces it (independent ``distributions`` add up; the action dimensions of each are averaged for
    ``kl_reduction="mean"``, so its ``M`` is divided by their number, or summed for ``"joint"``;
    docs/maths.md#kl-reduction), at ``theta = theta_old``. The Fisher of each distribution in its own parameters
    (docs/maths.md §4; Martens 2014, section 9.2):

    * ``Categorical(logits l)``: ``diag(p) - p p^T`` over the last dimension (the same for normalised or raw logits),
    * ``Bernoulli(logits l)``: ``p (1 - p)``,
    * ``Normal(loc m, scale s)``: ``1 / s^2`` for ``m`` and ``2 / s^2`` for ``s``; ``Independent`` wrappers are unwrapped.

    :param distributions: the action distribution(s) at ``theta_old``; batch shape ``[*B, ...]``.
    :param batch_dims: the first ``batch_dims`` dimensions of the batch shape are averaged over (the rest summed).
    :param weights: optional ``[*B]`` weights of the batch average (e.g. ``mask / mask.sum()``); default ``1 / |B|``.
    :param kl_reduction: ``"mean"`` (default) or ``"joint"``, as in :func:`pg_extras.action_kl`.
    :param mask: optional ``[*B]`` bool valid steps: the batch mean is over them, as :func:`pg_extras.action_kl`'s
        (``weights = mask / mask.sum()``; give one of ``mask`` and ``weights``).
    :return: ``(outputs, output_fisher)``: the parameter tensors that require grad, in order (``[logits]`` for a
        Categorical / Bernoulli, ``[loc, scale]`` for a Normal, a fixed ``scale`` left out) and ``[u_1, ...] -> [M_1 u_1,
        ...]`` on tangents shaped like them; ``None`` if a distribution type is not supported.

    Example::

        >>> logits = torch.zeros(2, 2, requires_grad=True)
        >>> outputs, fisher = distribution_fisher([Categorical(logits=logits)])
        >>> fisher([torch.tensor([[1.0, 0.0], [0.0, 0.0]])])  # (diag(p) - p p^T) u / 2 with p = (1/2, 1/2)
        [tensor([[ 0.1250, -0.1250],
                [ 0.0000,  0.0000]])]
    """
    if batch_dims < 0:
        raise ValueError(f"batch_dims must be >= 0, got {batch_dims}.")
    check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
    # (output, elementwise Fisher weight, probabilities for the Categorical's -p p^T term or None, batch shape)
    terms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Size]] = []
    for dist in distributions:
        dist = _unwrap(dist)
        lead = dist.batch_shape[:batch_dims]
        scale = 1.0 / max(action_dims(dist, batch_dims), 1) if kl_reduction == "mean" else 1.0
        if type(dist) is Categorical:
            probs = torch.softmax(dist.logits.detach(), -1)
            terms.append((dist.logits, probs * scale, probs, lead))
        elif type(dist) is Bernoulli:
            p = torch.sigmoid(dist.logits.detach())
            terms.append((dist.logits, p * (1 - p) * scale, None, lead))
        elif type(dist) is Normal:
            inv_var = dist.scale.detach().pow(-2) * scale
            terms += [(dist.loc, inv_var, None, lead), (dist.scale, 2.0 * inv_var, None, lead)]
        else:
            return None
    if not terms:
        raise ValueError("distributions is empty: pass the policy's action distribution(s).")
    batch_shape = terms[0][3]
    weights = _batch_weights(weights, mask, terms[0][0].dtype)
    if weights is not None and weights.shape != batch_shape:
        raise ValueError(f"weights has shape {tuple(weights.shape)} but the batch shape is {tuple(batch_shape)}.")
    outputs, fishers, probs_list = [], [], []
    for out, fisher, probs, lead in terms:
        if lead != batch_shape:
            raise ValueError(
                f"the distributions have batch shapes {tuple(lead)} and {tuple(batch_shape)} in their first {batch_dims} "
                "dimension(s): pass distributions over the same batch (or set batch_dims)."
            )
        if not out.requires_grad:  # e.g. a fixed std: no tangent
            continue
        if weights is None:
            fisher = fisher / max(batch_shape.numel(), 1)  # the batch mean
        else:
            fisher = fisher * weights.detach().reshape(*batch_shape, *([1] * (out.dim() - len(batch_shape))))
        outputs.append(out)
        fishers.append(fisher)
        probs_list.append(probs)
    if not outputs:
        raise ValueError("the distributions do not depend on params with a graph: build them with autograd enabled.")

    def output_fisher(tangents: list[torch.Tensor]) -> list[torch.Tensor]:
        return [
            fisher * u if probs is None else fisher * (u - (probs * u).sum(-1, keepdim=True))
            for u, fisher, probs in zip(tangents, fishers, probs_list, strict=True)
        ]

    return outputs, output_fisher


def distribution_fvp_fn(
    distributions: Sequence[Distribution],
    params: Sequence[torch.Tensor],
    damping: float = 0.0,
    batch_dims: int = 1,
    weights: torch.Tensor | None = None,
    kl_reduction: str = DEFAULT_KL_REDUCTION,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Gauss-Newton Fisher-vector product ``v -> J^T M J v + damping v`` of a policy's action distribution(s).

    :func:`gauss_newton_fvp_fn` with the outputs and ``M`` of :func:`distribution_fisher`: at ``theta = theta_old``
    it equals the Hessian of the mean ``KL(pi_old || pi_theta)`` times ``v`` (what :func:`fisher_vector_product_fn`
    computes by double backward), at lower cost.

    :param distributions: the action distribution(s) at ``theta_old``, *with* a graph to ``params``.
    :param params: the actor parameters.
    :param damping: added ``damping * v``.
    :param batch_dims: see :func:`distribution_fisher`.
    :param weights: see :func:`distribution_fisher`.
    :param kl_reduction: see :func:`distribution_fisher`.
    :return: the product function on flat vectors, or ``None`` if a distribution type is not supported (then use
        :func:`fisher_vector_product_fn` on the KL).

    Example::

        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> net = torch.nn.Linear(3, 4)
        >>> fvp = distribution_fvp_fn([Categorical(logits=net(torch.randn(8, 3)))], list(net.parameters()))
        >>> fvp(torch.ones(16)).shape
        torch.Size([16])
    """
    check_nonnegative("damping", damping)
    fisher = distribution_fisher(distributions, batch_dims, weights, kl_reduction)
    if fisher is None:
        return None
    outputs, output_fisher = fisher
    return gauss_newton_fvp_fn(outputs, params, output_fisher, damping)


def mlp_fvp_fn(
    mlp: nn.Module | Sequence[nn.Module],
    inputs: torch.Tensor,
    params: Sequence[torch.Tensor],
    fisher: tuple[Sequence[torch.Tensor], Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]],
    damping: float = 0.0,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The Gauss-Newton Fisher-vector product ``v -> J^T M J v + damping v`` of an MLP policy, without autograd.

    The same product as :func:`distribution_fvp_fn` (docs/maths.md#fisher-vector-products; Martens 2014), with the
    MLP's ``J v`` / ``J^T u`` from :class:`pg_extras.MlpLinearization` (a few matrix products, none of autograd's
    per-node overhead, which dominates small networks on a CPU). Plain torch objects only, so that any framework's
    policy can use it: SB3's ``TRPO`` passes ``[policy.mlp_extractor.policy_net, policy.action_net]`` and the
    flattened observations, a TorchRL actor its ``nn.Sequential`` and its input.

    :param mlp: the network that maps ``inputs`` to the distribution parameters: a module or list of modules, see
        :func:`pg_extras.mlp_layers` (``nn.Linear`` with ``nn.Tanh`` / ``nn.ReLU`` / ``nn.Identity``).
    :param inputs: ``[*B, in]`` the MLP's input (a constant: no graph to ``params``).
    :param params: the parameters ``theta`` (layout of ``v``): the MLP's weights and biases and any other parameter
        of the distribution (e.g. SB3's state-independent ``log_std``); MLP parameters left out are held fixed.
    :param fisher: ``distribution_fisher(distributions)`` of the distributions built from ``mlp(inputs)``.
    :param damping: added ``damping * v``.
    :return: the product on flat vectors (at the parameters' current values), or ``None`` when this is not such an
        MLP policy and callers fall back to :func:`distribution_fvp_fn` / :func:`fisher_vector_product_fn`.

    What is checked (else ``None``): ``mlp`` is an MLP; the first distribution parameters of ``fisher``, concatenated
    along the last dimension, equal the MLP's output on ``inputs``, each up to a per-row constant only where ``M``
    ignores such shifts (a Categorical's normalised logits); they depend on no parameter outside the MLP; the other
    distribution parameters (a Gaussian's std) depend on no MLP parameter (their ``J`` is taken by autograd).
    Comparing with the real output also catches forward hooks or overridden ``forward`` methods that change it.

    Example::

        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))
        >>> obs = torch.randn(16, 3)
        >>> fisher = distribution_fisher([Categorical(logits=net(obs))])
        >>> fast = mlp_fvp_fn(net, obs, list(net.parameters()), fisher)
        >>> v = torch.randn(sum(p.numel() for p in net.parameters()))
        >>> torch.allclose(fast(v), distribution_fvp_fn([Categorical(logits=net(obs))], list(net.parameters()))(v), atol=1e-6)
        True
    """
    damping = check_nonnegative("damping", damping)  # type: ignore[assignment]
    layers = mlp_layers(mlp)
    outputs, output_fisher = list(fisher[0]), fisher[1]
    if layers is None or not outputs or inputs.requires_grad or inputs.dim() < 1:
        return None
    weight0 = layers[0][0]
    if inputs.shape[-1] != weight0.shape[1] or inputs.dtype != weight0.dtype or inputs.device != weight0.device:
        return None
    lin = MlpLinearization(layers, inputs.detach().reshape(-1, inputs.shape[-1]))
    z = lin.output.reshape(*inputs.shape[:-1], lin.output.shape[-1])
    sizes = _mlp_output_sizes(outputs, z, output_fisher)
    if sizes is None:
        return None
    heads, rest = outputs[: len(sizes)], outputs[len(sizes) :]
    params = list(params)
    mlp_params = [t for w, b, _ in layers for t in (w, b) if t is not None]
    mlp_ids = {id(t) for t in mlp_params}
    others = [p for p in params if id(p) not in mlp_ids]
    if reachable_parameters(heads, others) or (rest and reachable_parameters(rest, mlp_params)):
        return None
    # The other distribution parameters (e.g. std = exp(log_std)) by autograd, on their own small graph
    rest_products = _jacobian_products(rest, others) if rest and others else None
    param_sizes = [p.numel() for p in params]

    def fvp(v: torch.Tensor) -> torch.Tensor:
        v = v.detach()
        chunk = {id(p): c.view_as(p) for p, c in zip(params, v.split(param_sizes), strict=True)}
        tangents = [(_tangent(chunk, w), None if b is None else _tangent(chunk, b)) for w, b, _ in layers]
        jv = list(lin.jvp(tangents).reshape(z.shape).split(sizes, -1))
        if rest:
            jv += rest_products[0]([chunk[id(p)] for p in others]) if rest_products else [torch.zeros_like(o) for o in rest]
        mjv = list(output_fisher(jv))
        grads = {}
        cotangent = torch.cat([m.reshape(-1, m.shape[-1]) for m in mjv[: len(heads)]], -1)
        for (w, b, _), (grad_w, grad_b) in zip(layers, lin.vjp(cotangent), strict=True):
            grads[id(w)] = grad_w
            if b is not None:
                grads[id(b)] = grad_b
        if rest_products:
            grads.update(zip(map(id, others), rest_products[1](mjv[len(heads) :]), strict=True))
        out = _flat([grads.get(id(p)) for p in params], params)
        return out + damping * v if damping else out

    return fvp


def _tangent(chunk: dict[int, torch.Tensor], param: torch.Tensor) -> torch.Tensor:
    """The part of ``v`` for ``param`` (zeros for a parameter held fixed)."""
    return chunk[id(param)] if id(param) in chunk else torch.zeros_like(param)


def _mlp_output_sizes(
    outputs: Sequence[torch.Tensor], z: torch.Tensor, output_fisher: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]
) -> list[int] | None:
    """Last-dimension sizes of the prefix of ``outputs`` that the MLP output ``z`` tiles, or ``None``.

    Each of them must equal its piece of ``z``, or differ from it by a per-row constant that ``M`` ignores
    (``M 1 = 0``, as for a Categorical's normalised logits ``z - logsumexp(z)``): then ``J^T M J`` is the same for both.
    """
    sizes: list[int] = []
    for out in outputs:
        if sum(sizes) >= z.shape[-1] or out.shape[:-1] != z.shape[:-1]:
            break
        sizes.append(out.shape[-1])
    if sum(sizes) != z.shape[-1]:
        return None
    zeros = [torch.zeros_like(o) for o in outputs]
    for k, piece in enumerate(z.split(sizes, -1)):
        head = outputs[k]
        diff = head.detach() - piece
        tol = 1e-5 * max(1.0, float(piece.abs().max()))
        if float(diff.abs().max()) <= tol:
            continue
        if float((diff - diff[..., :1]).abs().max()) > tol:  # not even a per-row shift
            return None
        probe = torch.linspace(-1.0, 1.0, head.shape[-1], dtype=head.dtype, device=head.device).expand_as(head)
        scale = float(output_fisher([*zeros[:k], probe, *zeros[k + 1 :]])[k].abs().max())
        null = float(output_fisher([*zeros[:k], torch.ones_like(head), *zeros[k + 1 :]])[k].abs().max())
        if not null <= 1e-4 * scale:  # M sees the shift, so its Jacobian would matter
            return None
    return sizes


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, max_iter: int = 10, residual_tol: float = 1e-10
) -> torch.Tensor:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``matvec(v) = A v``.

    :param matvec: the product with ``A``.
    :param b: right-hand side, 1-D.
    :param max_iter: maximum CG iterations (``n`` iterations solve an ``n x n`` system exactly in exact arithmetic).
    :param residual_tol: stop when ``||r||^2`` falls below it.
    :return: the approximate solution ``x``.

    Example::

        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 2.0]))
        tensor([0.0909, 0.6364])
    """
    return _conjugate_gradient(matvec, b, max_iter, residual_tol)[0]


def _conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, max_iter: int, residual_tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`conjugate_gradient` that also returns ``A x``, accumulated from the products it made (no extra product)."""
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
    x = torch.zeros_like(b)
    ax = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(max_iter):
        if rr <= residual_tol:
            break
        ap = matvec(p)
        pap = p @ ap
        if not pap > 0:  # no positive curvature along p (e.g. a singular undamped Fisher): keep the current x
            if not torch.isfinite(pap):
                check_finite("the matrix-vector product in conjugate_gradient", ap, hint=_FVP_HINT)
            break
        alpha = rr / pap
        x = x + alpha * p
        ax = ax + alpha * ap
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, ax


@dataclass
class TrustRegionResult:
    """What one trust-region step did."""

    accepted: bool  # a step was accepted (else the parameters were restored)
    steps_tried: int  # line-search evaluations
    step_fraction: float  # fraction of the maximal step that was taken (0 when rejected)
    kl: float  # KL after the step (0 when rejected)
    improvement: float  # surrogate gain of the accepted step (0 when rejected)
    surrogate_before: float
    surrogate_after: float


def _check_max_kl(max_kl: float) -> float:
    return check_float(  # type: ignore[return-value]
        "max_kl", max_kl, low=0.0, low_inclusive=False, hint="the trust-region radius delta is a finite bound, e.g. 0.01"
    )


def line_search(
    params: Sequence[torch.Tensor],
    full_step: torch.Tensor,
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    surrogate_before: float,
    max_kl: float,
    shrinking_factor: float = 0.8,
    max_iter: int = 10,
) -> TrustRegionResult:
    """Backtracking line search along ``full_step`` (docs/maths.md#backtracking-line-search-and-restore).

    Tries ``theta_old + shrinking_factor^i * full_step`` for ``i = 0 .. max_iter - 1`` and accepts the first one whose
    surrogate is finite and larger than ``surrogate_before`` and whose KL is finite and ``<= max_kl``. If none
    qualifies, or if ``evaluate`` raises, the parameters are restored to ``theta_old`` exactly (``try / finally``).

    :param params: the actor parameters (updated in place).
    :param full_step: 1-D maximal step (finite).
    :param evaluate: returns ``(surrogate, mean_kl)`` at the current parameters; called under ``no_grad``.
    :param surrogate_before: surrogate value at ``theta_old``.
    :param max_kl: the KL bound ``delta``: a finite number > 0.
    :param shrinking_factor: step-size factor per rejected try, in (0, 1).
    :param max_iter: maximum number of tries.

    Example::

        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> result = line_search([w], torch.ones(1), lambda: (w.sum(), (w**2).sum()), 0.0, max_kl=0.5)
        >>> result.accepted, round(result.step_fraction, 3), w.data  # steps 1.0 and 0.8 break the bound
        (True, 0.64, tensor([0.6400]))
    """
    max_kl = _check_max_kl(max_kl)
    if not 0.0 < shrinking_factor < 1.0:
        raise ValueError(f"shrinking_factor must be in (0, 1), got {shrinking_factor}.")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
    check_finite("full_step", full_step, hint="the trust-region step must be finite: check the gradient and the Fisher")
    params = list(params)
    old = get_flat_params(params)
    fraction = 1.0
    accepted: TrustRegionResult | None = None
    try:
        with torch.no_grad():
            for i in range(max_iter):
                set_flat_params(params, old + fraction * full_step)
                surrogate, kl = evaluate()
                surrogate, kl = float(surrogate), float(kl)
                if math.isfinite(surrogate) and math.isfinite(kl) and kl <= max_kl and surrogate > surrogate_before:
                    accepted = TrustRegionResult(
                        True, i + 1, fraction, kl, surrogate - surrogate_before, surrogate_before, surrogate
                    )
                    return accepted
                fraction *= shrinking_factor
    finally:
        if accepted is None:  # rejected, or evaluate() raised: back to theta_old
            set_flat_params(params, old)
    return TrustRegionResult(False, max_iter, 0.0, 0.0, 0.0, surrogate_before, surrogate_before)


def trust_region_step(
    params: Sequence[torch.Tensor],
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    max_kl: float,
    cg_max_steps: int = 15,
    cg_damping: float = 0.1,
    shrinking_factor: float = 0.8,
    line_search_max_iter: int = 10,
    fvp: Callable[[torch.Tensor], torch.Tensor] | None = None,
    initial: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrustRegionResult:
    """One TRPO policy update (docs/maths.md#4-importance-ratio-and-trpo; Schulman et al. 2015, arXiv:1502.05477).

    :param params: actor parameters to update in place.
    :param evaluate: returns ``(surrogate, mean KL(pi_old || pi))`` at the current parameters, differentiable
        (the KL must be computed against a detached copy of the old policy, so that it is 0 with zero gradient at
        ``theta_old`` and its Hessian there is the Fisher matrix), e.g. :func:`pg_extras.trust_region_surrogate` and
        :func:`pg_extras.joint_kl`.
    :param max_kl: trust-region radius ``delta``: a finite number > 0.
    :param cg_max_steps: conjugate-gradient iterations.
    :param cg_damping: damping added to the Fisher-vector product.
    :param shrinking_factor: backtracking factor.
    :param line_search_max_iter: backtracking tries.
    :param fvp: optional undamped Fisher-vector product ``v -> F v`` at ``theta_old`` on flat vectors, e.g. the cheaper
        :func:`mlp_fvp_fn` / :func:`distribution_fvp_fn` / :func:`gauss_newton_fvp_fn`; ``cg_damping`` is added to it.
        Default: the double backward of the KL returned by the first ``evaluate()`` (:func:`fisher_vector_product_fn`);
        with ``fvp`` that KL is not differentiated (it may be any tensor).
    :param initial: ``(surrogate, kl)`` at ``theta_old`` with a graph, if the caller already computed them (then
        ``evaluate`` is only called by the line search); default: ``evaluate()``.
    :return: :class:`TrustRegionResult`.
    :raises ValueError: for a bad ``max_kl``, a surrogate without a graph to ``params``, a non-finite surrogate,
        gradient or conjugate-gradient direction at ``theta_old`` (naming the quantity). The parameters are then
        unchanged; they are restored if the line search's ``evaluate`` raises.

    The step length uses ``x^T F x`` accumulated by the conjugate gradient from its own products
    (``cg_max_steps`` Fisher-vector products in all, no extra one). A direction without positive curvature
    (``x^T F x <= 0``, e.g. a zero gradient) is no step: the result is rejected and the parameters are untouched.

    Example::

        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> logits = torch.zeros(3, requires_grad=True)
        >>> adv, actions = torch.tensor([1.0, -1.0, 0.5]), torch.tensor([0, 1, 2])
        >>> old = torch.log_softmax(logits, 0).detach()
        >>> def evaluate():
        ...     logp = torch.log_softmax(logits, 0)
        ...     surrogate = (torch.exp(logp[actions] - old[actions]) * adv).mean()
        ...     kl = (old.exp() * (old - logp)).sum()
        ...     return surrogate, kl
        >>> result = trust_region_step([logits], evaluate, max_kl=0.01)
        >>> result.accepted, result.kl <= 0.01
        (True, True)
    """
    max_kl = _check_max_kl(max_kl)
    cg_damping = check_nonnegative("cg_damping", cg_damping)  # type: ignore[assignment]
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("params is empty (or has no parameter that requires grad): pass the actor's parameters.")
    surrogate, kl = evaluate() if initial is None else initial
    if not isinstance(surrogate, torch.Tensor) or surrogate.numel() != 1:
        raise ValueError(f"evaluate() must return a scalar surrogate tensor first, got {type(surrogate).__name__}.")
    if not surrogate.requires_grad:
        raise ValueError(
            "surrogate does not depend on params: evaluate() must compute it from params with autograd enabled (not under "
            "torch.no_grad() / inference_mode, and not from detached tensors)."
        )
    check_finite("surrogate at theta_old", surrogate.detach(), hint="check the advantages and the log-probabilities")
    grads = torch.autograd.grad(surrogate, params, retain_graph=True, allow_unused=True)
    if all(g is None for g in grads):
        raise ValueError(
            f"surrogate does not depend on params: none of the {len(params)} parameters reaches it; pass the parameters "
            "the policy's log-probabilities are computed from."
        )
    grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])
    check_finite("surrogate gradient", grad, hint="the policy's outputs or the advantages are not finite")
    if fvp is None:
        if not isinstance(kl, torch.Tensor) or not kl.requires_grad:
            raise ValueError(
                "kl does not depend on params: evaluate() must return a KL with a graph (against a detached copy of "
                "the old policy), or pass fvp."
            )
        matvec = fisher_vector_product_fn(kl, params, cg_damping)
    else:
        undamped = fvp

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return undamped(v) + cg_damping * v

    direction, f_direction = _conjugate_gradient(matvec, grad, cg_max_steps, 1e-10)
    check_finite("conjugate-gradient direction", direction, hint=_FVP_HINT)
    shs = float(direction @ f_direction)
    surrogate_before = float(surrogate.detach())
    if not (math.isfinite(shs) and shs > 0.0):
        return TrustRegionResult(False, 0, 0.0, 0.0, 0.0, surrogate_before, surrogate_before)
    full_step = math.sqrt(2.0 * max_kl / shs) * direction
    if not bool(torch.isfinite(full_step).all()):  # x^T F x so small that the step overflows: no step
        return TrustRegionResult(False, 0, 0.0, 0.0, 0.0, surrogate_before, surrogate_before)
    return line_search(params, full_step, evaluate, surrogate_before, max_kl, shrinking_factor, line_search_max_iter)


@dataclass(frozen=True)
class TrustRegionSettings:
    """The settings of :func:`trust_region_step` (TRPO's ``target_kl``, CG and line search), checked once.

    Both adapters keep one of these and call :meth:`step`. Example::

        >>> TrustRegionSettings(max_kl=0.01).cg_max_steps
        15
    """

    max_kl: float
    cg_max_steps: int = 15
    cg_damping: float = 0.1
    shrinking_factor: float = 0.8
    line_search_max_iter: int = 10

    def __post_init__(self) -> None:
        check_float("max_kl", self.max_kl, 0.0, low_inclusive=False, hint="the trust-region radius, e.g. 0.01")

    def step(
        self,
        params: Sequence[torch.Tensor],
        evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
        fvp: Callable[[torch.Tensor], torch.Tensor] | None = None,
        initial: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TrustRegionResult:
        """:func:`trust_region_step` with these settings."""
        return trust_region_step(
            params, evaluate, self.max_kl, self.cg_max_steps, self.cg_damping, self.shrinking_factor,
            self.line_search_max_iter, fvp=fvp, initial=initial,
        )  # fmt: skip
