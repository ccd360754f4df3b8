"""KL divergence estimators (Schulman, "Approximating KL Divergence", 2020) and exact KL.

With samples ``x ~ p`` and ``log_r = log q(x) - log p(x)``:

* ``k1 = -log_r`` (unbiased, high variance, can be negative),
* ``k2 = log_r^2 / 2`` (biased, low variance),
* ``k3 = exp(log_r) - 1 - log_r`` (unbiased, always >= 0; GRPO's estimator of ``KL(pi || pi_ref)``),
* ``k3+``: the value of ``k3`` with the gradient of ``k2`` (straight-through; verl's ``low_var_kl+``), so that the
  differentiated penalty follows ``grad KL(p || q)`` instead of the reverse KL (docs/maths.md#12-variants).

:func:`kl_estimate` (a loss term and a logged statistic) raises on non-finite log-probabilities or an overflowing
estimate; :func:`categorical_kl` and :func:`exact_kl` do not, because a trust-region line search evaluates them at
trial parameters and rejects a non-finite KL itself.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, kl_divergence

from pg_extras.validation import check_choice, check_finite, check_int, check_same_shape

__all__ = ["KL_ESTIMATORS", "categorical_kl", "exact_kl", "kl_estimate"]

KL_ESTIMATORS = ("k1", "k2", "k3", "k3+")


_LOG_P_HINT = (
    "log-probabilities of the sampled actions must be finite: NaN means a policy's outputs are NaN; -inf means an "
    "action has probability 0 under that policy (outside its support, e.g. a clipped action), so the KL is infinite"
)


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor, estimator: str) -> torch.Tensor:
    log_r = log_q - log_p
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    k3 = torch.expm1(log_r) - log_r
    if estimator == "k3+":  # k3's value, k2's gradient: k2 + sg(k3 - k2)
        k2 = 0.5 * log_r**2
        return k2 + (k3 - k2).detach()
    return k3


def kl_estimate(log_p: torch.Tensor, log_q: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-sample estimate of ``KL(p || q)`` from samples drawn from ``p``.

    :param log_p: ``[*S]`` log-probabilities of the samples under ``p`` (the sampling distribution); finite.
    :param log_q: ``[*S]`` log-probabilities of the same samples under ``q``; finite.
    :param estimator: ``k1``, ``k2``, ``k3`` or ``k3+`` (``k3``'s value, ``k2``'s gradient w.r.t. ``log_p``).
    :return: ``[*S]`` per-sample estimates; their mean estimates the KL.
    :raises ValueError: if a log-probability is NaN / inf, or the estimate overflows (``k3`` with
        ``log_q - log_p`` beyond ``log(finfo.max)``, about 88 in float32): the two policies are too far apart.

    Example::

        >>> kl_estimate(torch.tensor([-1.0]), torch.tensor([-1.0]))
        tensor([0.])
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_same_shape("log_p", log_p, log_q=log_q)
    out = _kl_terms(log_p, log_q, estimator)
    finite = [torch.isfinite(t.detach()).all() for t in (log_p, log_q, out)]
    if out.numel() and out.is_floating_point() and not bool(torch.stack(finite).all()):
        check_finite("log_p", log_p.detach(), hint=_LOG_P_HINT)
        check_finite("log_q", log_q.detach(), hint=_LOG_P_HINT)
        check_finite(
            f"KL estimate ({estimator})",
            out.detach(),
            hint="the two policies are too far apart (log_q - log_p is huge): lower the learning rate, or refresh the "
            "reference policy more often (ref_update_interval)",
            derived_from="log_p and log_q",
        )
    return out


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(p || q) = sum_k p_k (log p_k - log q_k)`` between categorical distributions.

    Same value as ``torch.distributions.kl_divergence`` on two ``Categorical`` but with a lean autograd graph (no masked
    in-place writes), which matters for TRPO's Fisher-vector products (double backward through the KL).

    :param log_p: ``[*B, K]`` normalised log-probabilities of ``p`` (``-inf`` allowed: those terms are 0).
    :param log_q: ``[*B, K]`` normalised log-probabilities of ``q``.
    :return: ``[*B]`` KL per batch element.

    Example::

        >>> log_p = torch.log(torch.tensor([0.5, 0.5]))
        >>> categorical_kl(log_p, torch.log(torch.tensor([0.25, 0.75])))
        tensor(0.1438)
    """
    check_same_shape("log_p", log_p, log_q=log_q)
    p = log_p.exp()
    terms = p * (log_p - log_q)
    return torch.where(p > 0, terms, torch.zeros_like(terms)).sum(-1)


def exact_kl(p: Distribution, q: Distribution, num_samples: int = 0) -> torch.Tensor:
    """``KL(p || q)`` per batch element, exact where torch registers a closed form.

    :param p: a ``torch.distributions.Distribution``.
    :param q: a distribution with the same batch shape.
    :param num_samples: if no closed form exists, use this many samples of ``p`` with ``k3`` (0: raise).
    :return: tensor with ``p``'s batch shape.
    """
    num_samples = check_int("num_samples", num_samples, minimum=0)  # type: ignore[assignment]
    try:
        return kl_divergence(p, q)
    except NotImplementedError:
        if num_samples <= 0:
            raise ValueError(
                f"No closed-form KL between {type(p).__name__} and {type(q).__name__}: pass num_samples > 0 to estimate it."
            ) from None
        x = p.rsample((num_samples,)) if p.has_rsample else p.sample((num_samples,))
        # Unchecked: a line search evaluates this at trial parameters and rejects a non-finite KL itself.
        return _kl_terms(p.log_prob(x), q.log_prob(x), "k3").mean(0)
