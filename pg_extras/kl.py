"""KL divergence estimators (Schulman, "Approximating KL Divergence", 2020) and exact KL.

With samples ``x ~ p`` and ``log_r = log q(x) - log p(x)``:

* ``k1 = -log_r`` (unbiased, high variance, can be negative),
* ``k2 = log_r^2 / 2`` (biased, low variance),
* ``k3 = exp(log_r) - 1 - log_r`` (unbiased, always >= 0; GRPO's estimator of ``KL(pi || pi_ref)``).
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, kl_divergence

from pg_extras._checks import check_choice, check_same_shape

__all__ = ["KL_ESTIMATORS", "categorical_kl", "exact_kl", "kl_estimate"]

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(log_p: torch.Tensor, log_q: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-sample estimate of ``KL(p || q)`` from samples drawn from ``p``.

    :param log_p: ``[*S]`` log-probabilities of the samples under ``p`` (the sampling distribution).
    :param log_q: ``[*S]`` log-probabilities of the same samples under ``q``.
    :param estimator: ``k1``, ``k2`` or ``k3``.
    :return: ``[*S]`` per-sample estimates; their mean estimates the KL.

    Example::

        >>> kl_estimate(torch.tensor([-1.0]), torch.tensor([-1.0]))
        tensor([0.])
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_same_shape("log_p", log_p, log_q=log_q)
    log_r = log_q - log_p
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    return torch.expm1(log_r) - log_r


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
    try:
        return kl_divergence(p, q)
    except NotImplementedError:
        if num_samples <= 0:
            raise ValueError(
                f"No closed-form KL between {type(p).__name__} and {type(q).__name__}: pass num_samples > 0 to estimate it."
            ) from None
        x = p.rsample((num_samples,)) if p.has_rsample else p.sample((num_samples,))
        return kl_estimate(p.log_prob(x), q.log_prob(x), "k3").mean(0)
