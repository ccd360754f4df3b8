"""Importance ratios, the clipped surrogate (PPO / GRPO / DAPO clip-higher) and loss aggregation.

Maths: seed 2.4 (ratio surrogate), 2.5 (PPO-clip), 2.6 (GRPO). Aggregation modes over variable-length
episodes follow DeepSeekMath (``grpo``), DAPO / BNPO (token-level mean) and Dr. GRPO (sum over a constant).
"""

from __future__ import annotations

import torch

from pg_extras._checks import check_choice, check_nonnegative, check_same_shape

__all__ = ["LOSS_AGGREGATIONS", "aggregate_loss", "clipped_surrogate_loss", "importance_ratio", "log_ratio"]

LOSS_AGGREGATIONS = ("grpo", "bnpo", "dapo", "dr_grpo")


def log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """``log pi(a|s) - log pi_old(a|s)`` (``old_log_prob`` is treated as a constant)."""
    check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob)
    return log_prob - old_log_prob.detach()


def importance_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """``rho = pi(a|s) / pi_old(a|s) = exp(log_prob - old_log_prob)`` (seed 2.4)."""
    return torch.exp(log_ratio(log_prob, old_log_prob))


def clipped_surrogate_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float | None,
    clip_range_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step clipped surrogate loss ``-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)`` (seed 2.5).

    :param log_prob: ``[*S]`` log-probabilities of the taken actions under the current policy.
    :param old_log_prob: ``[*S]`` the same under the behaviour policy.
    :param advantages: ``[*S]``.
    :param clip_range: ``eps_low`` (``None``: unclipped ratio surrogate ``-rho A``, as TRPO's).
    :param clip_range_high: ``eps_high`` (DAPO clip-higher); ``None``: same as ``clip_range``.
    :return: ``(loss [*S], clipped [*S] bool)``: ``clipped`` marks steps where the clip is active.

    Example::

        >>> loss, clipped = clipped_surrogate_loss(torch.log(torch.tensor([1.5])), torch.zeros(1), torch.ones(1), 0.2)
        >>> loss, clipped
        (tensor([-1.2000]), tensor([True]))
    """
    check_nonnegative("clip_range", clip_range)
    check_nonnegative("clip_range_high", clip_range_high)
    check_same_shape("log_prob", log_prob, advantages=advantages)
    ratio = importance_ratio(log_prob, old_log_prob)
    advantages = advantages.detach()
    unclipped = ratio * advantages
    if clip_range is None:
        return -unclipped, torch.zeros_like(ratio, dtype=torch.bool)
    high = clip_range if clip_range_high is None else clip_range_high
    clipped_ratio = torch.clamp(ratio, 1.0 - clip_range, 1.0 + high)
    surrogate = torch.minimum(unclipped, clipped_ratio * advantages)
    return -surrogate, (ratio < 1.0 - clip_range) | (ratio > 1.0 + high)


def aggregate_loss(
    loss: torch.Tensor, mask: torch.Tensor | None = None, mode: str = "bnpo", max_length: int | None = None
) -> torch.Tensor:
    """Reduce a per-step loss over masked variable-length episodes.

    :param loss: ``[E, L]`` (episodes x steps) or ``[S]`` flat steps (then only ``bnpo``/``dapo``/``dr_grpo`` apply
        with ``E = 1``).
    :param mask: bool, same shape, valid steps (default: all).
    :param mode: ``grpo``: mean over each episode's steps, then mean over episodes (DeepSeekMath);
        ``bnpo`` / ``dapo``: mean over all valid steps of the batch (token-level, DAPO); on one process the two
        coincide; ``dr_grpo``: sum over valid steps divided by ``E * max_length`` (Dr. GRPO's constant).
    :param max_length: the constant of ``dr_grpo`` (default: the padded length ``L``).
    :return: scalar loss.

    Example::

        >>> loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[True, True, True], [True, False, False]])
        >>> aggregate_loss(loss, mask, "grpo"), aggregate_loss(loss, mask, "bnpo"), aggregate_loss(loss, mask, "dr_grpo")
        (tensor(2.5000), tensor(1.7500), tensor(1.1667))
    """
    check_choice("mode", mode, LOSS_AGGREGATIONS)
    if mask is None:
        mask = torch.ones_like(loss, dtype=torch.bool)
    check_same_shape("loss", loss, mask=mask)
    if loss.dim() == 1:
        loss, mask = loss[None], mask[None]
    if loss.dim() != 2:
        raise ValueError(f"loss must have shape [E, L] or [S], got {tuple(loss.shape)}.")
    mask = mask.to(torch.bool)
    masked = torch.where(mask, loss, torch.zeros_like(loss))
    if mode == "grpo":
        lengths = mask.sum(1)
        has_steps = lengths > 0
        per_episode = masked.sum(1) / lengths.clamp(min=1)
        return (per_episode * has_steps).sum() / has_steps.sum().clamp(min=1)
    if mode in ("bnpo", "dapo"):
        return masked.sum() / mask.sum().clamp(min=1)
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length}.")
    constant = loss.shape[0] * (loss.shape[1] if max_length is None else max_length)
    return masked.sum() / constant
