"""Importance ratios, the clipped surrogate (PPO / GRPO / DAPO clip-higher) and loss aggregation.

Maths: seed 2.4 (ratio surrogate), 2.5 (PPO-clip), 2.6 (GRPO). Aggregation modes over variable-length
episodes follow DeepSeekMath (``grpo``), DAPO / BNPO (token-level mean) and Dr. GRPO (sum over a constant).
"""

from __future__ import annotations

import math

import torch

from pg_extras.validation import check_choice, check_finite, check_int, check_nonnegative, check_same_shape

__all__ = ["LOSS_AGGREGATIONS", "aggregate_loss", "clipped_surrogate_loss", "importance_ratio", "log_ratio"]

LOSS_AGGREGATIONS = ("grpo", "bnpo", "dapo", "dr_grpo")

LOG_PROB_HINT = (
    "the current policy's log-probabilities must be finite: NaN means the policy's outputs (weights, logits, "
    "means / stds) are NaN; -inf means the taken action has probability 0 under the policy (an action outside "
    "the distribution's support, e.g. a clipped or out-of-bounds action fed to log_prob)"
)
OLD_LOG_PROB_HINT = (
    "the behaviour log-probabilities stored at collection must be finite: store log pi_old(a|s) of the action "
    "actually taken (not a clipped / rescaled one, which can be outside the support and give -inf), and check that "
    "the policy was not NaN when collecting"
)
_RATIO_HINT = (
    "the policy moved too far from the behaviour policy in one update: lower the learning rate, the number of "
    "epochs or the clip range, or set target_kl for early stopping"
)


def _log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob - old_log_prob.detach()


def log_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """``log pi(a|s) - log pi_old(a|s)`` (``old_log_prob`` is treated as a constant and must be finite).

    ``log_prob`` is not checked: a trust-region line search evaluates it at trial parameters and rejects a
    non-finite result itself.
    """
    check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob)
    check_finite("old_log_prob", old_log_prob, hint=OLD_LOG_PROB_HINT)
    return _log_ratio(log_prob, old_log_prob)


def importance_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """``rho = pi(a|s) / pi_old(a|s) = exp(log_prob - old_log_prob)`` (seed 2.4); see :func:`log_ratio`."""
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
    clip_range = check_nonnegative("clip_range", clip_range)
    clip_range_high = check_nonnegative("clip_range_high", clip_range_high)
    check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob, advantages=advantages)
    lr = _log_ratio(log_prob, old_log_prob)
    ratio = torch.exp(lr)
    advantages = advantages.detach()
    unclipped = ratio * advantages
    if clip_range is None:
        loss, clipped = -unclipped, torch.zeros_like(ratio, dtype=torch.bool)
    else:
        high = clip_range if clip_range_high is None else clip_range_high
        clipped_ratio = torch.clamp(ratio, 1.0 - clip_range, 1.0 + high)
        loss = -torch.minimum(unclipped, clipped_ratio * advantages)
        clipped = (ratio < 1.0 - clip_range) | (ratio > 1.0 + high)
    _check_surrogate(log_prob, old_log_prob, advantages, lr, ratio, loss)
    return loss, clipped


def _check_surrogate(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    lr: torch.Tensor,
    ratio: torch.Tensor,
    loss: torch.Tensor,
) -> None:
    """One device synchronisation on the happy path; on failure, name the first culprit."""
    parts = (log_prob, old_log_prob, advantages, ratio, loss)
    if all(t.numel() == 0 or not t.is_floating_point() for t in parts):
        return
    ok = torch.stack([torch.isfinite(t.detach()).all() for t in parts]).all()
    if bool(ok):
        return
    check_finite("old_log_prob", old_log_prob.detach(), hint=OLD_LOG_PROB_HINT)
    check_finite("log_prob", log_prob.detach(), hint=LOG_PROB_HINT)
    check_finite("advantages", advantages, hint="check the rewards and the advantage estimator's inputs")
    bad = ~torch.isfinite(ratio.detach())
    if bool(bad.any()):
        worst = float(lr.detach()[bad].max())
        raise ValueError(
            f"importance ratio exp(log_prob - old_log_prob) overflows to inf (log-ratio up to {worst:.4g}; "
            f"{ratio.dtype} holds at most exp({math.log(torch.finfo(ratio.dtype).max):.4g})): {_RATIO_HINT}."
        )
    check_finite("surrogate loss", loss.detach(), hint=_RATIO_HINT + ", or rescale the advantages", derived_from="its inputs")


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
    :return: scalar loss; 0 (with a graph to ``loss``) for an empty or all-padding batch, in every mode.

    Padding never matters (not even NaN there). Valid non-finite steps are not judged here: they propagate, so that a
    trust-region line search evaluating this at trial parameters sees them and rejects the step; the per-step losses
    of the update rules (:func:`clipped_surrogate_loss`, :func:`pg_extras.kl_estimate`) check their inputs.

    Example::

        >>> loss = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
        >>> mask = torch.tensor([[True, True, True], [True, False, False]])
        >>> aggregate_loss(loss, mask, "grpo"), aggregate_loss(loss, mask, "bnpo"), aggregate_loss(loss, mask, "dr_grpo")
        (tensor(2.5000), tensor(1.7500), tensor(1.1667))
    """
    check_choice("mode", mode, LOSS_AGGREGATIONS)
    max_length = check_int("max_length", max_length, minimum=1, allow_none=True, hint="the constant of dr_grpo")
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
        out = (per_episode * has_steps).sum() / has_steps.sum().clamp(min=1)
    elif mode in ("bnpo", "dapo"):
        out = masked.sum() / mask.sum().clamp(min=1)
    else:
        # An empty batch (E = 0 or L = 0) sums to 0: divide by 1, not by 0.
        constant = max(loss.shape[0] * (loss.shape[1] if max_length is None else max_length), 1)
        out = masked.sum() / constant
    return out
