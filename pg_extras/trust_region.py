"""Trust-region machinery for TRPO (seed 2.4; Schulman et al. 2015, appendix C).

* flat-parameter helpers,
* Fisher-vector products ``F v = grad((grad KL) . v) + damping v`` of the mean KL (double-backward trick),
* conjugate gradient for ``x ~ F^-1 g``,
* the step ``sqrt(2 delta / x^T F x) x`` and a backtracking line search that accepts only a step that
  improves the surrogate and keeps ``KL <= delta``, and otherwise restores the parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pg_extras._checks import check_nonnegative, check_positive

__all__ = [
    "TrustRegionResult",
    "conjugate_gradient",
    "fisher_vector_product_fn",
    "flat_grad",
    "get_flat_params",
    "line_search",
    "set_flat_params",
    "trust_region_step",
]


def get_flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate ``params`` into one detached 1-D tensor."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def set_flat_params(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy the 1-D tensor ``flat`` into ``params`` in place (inverse of :func:`get_flat_params`)."""
    n = sum(p.numel() for p in params)
    if flat.numel() != n:
        raise ValueError(f"flat has {flat.numel()} elements but the parameters have {n}.")
    offset = 0
    with torch.no_grad():
        for p in params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def flat_grad(
    output: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = False, create_graph: bool = False
) -> torch.Tensor:
    """Gradient of a scalar ``output`` w.r.t. ``params`` as a 1-D tensor (zeros for unused parameters)."""
    grads = torch.autograd.grad(output, list(params), retain_graph=retain_graph, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])


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
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(max_iter):
        if rr <= residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


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


def line_search(
    params: Sequence[torch.Tensor],
    full_step: torch.Tensor,
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    surrogate_before: float,
    max_kl: float,
    shrinking_factor: float = 0.8,
    max_iter: int = 10,
) -> TrustRegionResult:
    """Backtracking line search along ``full_step``.

    Tries ``theta_old + shrinking_factor^i * full_step`` for ``i = 0 .. max_iter - 1`` and accepts the first one whose
    surrogate is larger than ``surrogate_before`` and whose ``KL <= max_kl``. If none qualifies, the parameters are
    restored to ``theta_old`` exactly.

    :param params: the actor parameters (updated in place).
    :param full_step: 1-D maximal step.
    :param evaluate: returns ``(surrogate, mean_kl)`` at the current parameters; called under ``no_grad``.
    :param surrogate_before: surrogate value at ``theta_old``.
    :param max_kl: the KL bound ``delta``.
    :param shrinking_factor: step-size factor per rejected try, in (0, 1).
    :param max_iter: maximum number of tries.
    """
    check_positive("max_kl", max_kl)
    if not 0.0 < shrinking_factor < 1.0:
        raise ValueError(f"shrinking_factor must be in (0, 1), got {shrinking_factor}.")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
    params = list(params)
    old = get_flat_params(params)
    fraction = 1.0
    with torch.no_grad():
        for i in range(max_iter):
            set_flat_params(params, old + fraction * full_step)
            surrogate, kl = evaluate()
            surrogate, kl = float(surrogate), float(kl)
            if kl <= max_kl and surrogate > surrogate_before:
                return TrustRegionResult(True, i + 1, fraction, kl, surrogate - surrogate_before, surrogate_before, surrogate)
            fraction *= shrinking_factor
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
) -> TrustRegionResult:
    """One TRPO policy update (seed 2.4.2, step 3).

    :param params: actor parameters to update in place.
    :param evaluate: returns ``(surrogate, mean KL(pi_old || pi))`` at the current parameters, differentiable
        (the KL must be computed against a detached copy of the old policy, so that it is 0 with zero gradient at
        ``theta_old`` and its Hessian there is the Fisher matrix).
    :param max_kl: trust-region radius ``delta``.
    :param cg_max_steps: conjugate-gradient iterations.
    :param cg_damping: damping added to the Fisher-vector product.
    :param shrinking_factor: backtracking factor.
    :param line_search_max_iter: backtracking tries.
    :return: :class:`TrustRegionResult`.

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
    check_positive("max_kl", max_kl)
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("params is empty (or has no parameter that requires grad): pass the actor's parameters.")
    surrogate, kl = evaluate()
    grad = flat_grad(surrogate, params, retain_graph=True)
    fvp = fisher_vector_product_fn(kl, params, cg_damping)
    direction = conjugate_gradient(fvp, grad, max_iter=cg_max_steps)
    shs = float(direction @ fvp(direction))
    surrogate_before = float(surrogate.detach())
    if not shs > 0.0 or not torch.isfinite(direction).all():
        return TrustRegionResult(False, 0, 0.0, 0.0, 0.0, surrogate_before, surrogate_before)
    full_step = (2.0 * max_kl / shs) ** 0.5 * direction
    return line_search(params, full_step, evaluate, surrogate_before, max_kl, shrinking_factor, line_search_max_iter)
