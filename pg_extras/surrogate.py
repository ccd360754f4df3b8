"""Importance ratios, the clipped surrogate (PPO / GRPO / DAPO clip-higher) and its variants, loss aggregation.

Maths: docs/maths.md §4 (ratio surrogate), 2.5 (PPO-clip), 2.6 (GRPO). Aggregation modes over variable-length
episodes follow DeepSeekMath (``grpo``), DAPO / BNPO (token-level mean) and Dr. GRPO (sum over a constant).
Variants (docs/maths.md#12-variants): GSPO's sequence-level ratio (``importance_sampling_level="sequence"``),
INTELLECT-2's two-sided clip (``delta``), dual clip (``clip_ratio_c``), CISPO (:func:`cispo_loss`) and SAPO's soft
gate (:func:`sapo_loss`).
"""

from __future__ import annotations

import math

import torch

from pg_extras.validation import (
    check_choice,
    check_finite,
    check_float,
    check_int,
    check_nonnegative,
    check_same_shape,
)

__all__ = [
    "IMPORTANCE_SAMPLING_LEVELS",
    "LOSS_AGGREGATIONS",
    "aggregate_loss",
    "cispo_loss",
    "clipped_surrogate_loss",
    "importance_ratio",
    "log_ratio",
    "sapo_loss",
    "sequence_log_ratio",
]

LOSS_AGGREGATIONS = ("grpo", "bnpo", "dapo", "dr_grpo")
#: ``importance_sampling_level`` of the surrogates: one ratio per step (PPO, GRPO) or per episode (GSPO).
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")

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
    """``rho = pi(a|s) / pi_old(a|s) = exp(log_prob - old_log_prob)`` (docs/maths.md §4); see :func:`log_ratio`."""
    return torch.exp(log_ratio(log_prob, old_log_prob))


def sequence_log_ratio(log_ratio: torch.Tensor, episode_index: torch.Tensor) -> torch.Tensor:
    """GSPO's sequence-level log-ratio: ``mean_t log_ratio`` over each episode's steps, broadcast to its steps.

    ``exp`` of it is the geometric mean of the per-step ratios of the episode, ``(pi(o_i) / pi_old(o_i))^(1/|o_i|)``
    (Zheng et al. 2025, arXiv:2507.18071; docs/maths.md#12-variants). Gradients flow to every step of the episode.

    :param log_ratio: ``[*S]`` per-step ``log pi - log pi_old``.
    :param episode_index: ``[*S]`` integer episode label of each step (any integers, episodes need not be
        contiguous); a negative label marks padding, which gets log-ratio 0 (ratio 1) and joins no episode.
    :return: ``[*S]``.

    Example::

        >>> sequence_log_ratio(torch.tensor([0.1, 0.3, -0.2, 5.0]), torch.tensor([0, 0, 1, -1]))
        tensor([ 0.2000,  0.2000, -0.2000,  0.0000])
    """
    check_same_shape("log_ratio", log_ratio, episode_index=episode_index)
    if episode_index.is_floating_point() or episode_index.is_complex() or episode_index.dtype == torch.bool:
        raise ValueError(
            f"episode_index must hold integer episode labels, got dtype {episode_index.dtype}: pass the episode id "
            "of each step (e.g. EpisodeLayout.episode_index)."
        )
    flat, index = log_ratio.reshape(-1), episode_index.reshape(-1)
    valid = index >= 0
    if flat.numel() == 0:
        return log_ratio * 0.0
    _, labels = torch.unique(torch.where(valid, index, index.new_full((), -1)), return_inverse=True)
    n = int(labels.max()) + 1
    zero = torch.zeros_like(flat)
    total = zero.new_zeros(n).index_add(0, labels, torch.where(valid, flat, zero))
    count = zero.new_zeros(n).index_add(0, labels, valid.to(flat.dtype))
    mean = total / count.clamp(min=1)
    return torch.where(valid, mean[labels], zero).reshape(log_ratio.shape)


def _ratio_at_level(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    importance_sampling_level: str,
    episode_index: torch.Tensor | None,
) -> torch.Tensor:
    """The log importance weight of every step: per step (``"token"``) or per episode (``"sequence"``, GSPO)."""
    check_choice("importance_sampling_level", importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
    lr = _log_ratio(log_prob, old_log_prob)
    if importance_sampling_level == "token":
        return lr
    if episode_index is None:
        raise ValueError(
            "importance_sampling_level='sequence' needs episode_index (the episode of each step, e.g. "
            "EpisodeLayout.episode_index) to average the log-ratios over each episode."
        )
    return sequence_log_ratio(lr, episode_index)


def clipped_surrogate_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float | None,
    clip_range_high: float | None = None,
    *,
    delta: float | None = None,
    clip_ratio_c: float | None = None,
    importance_sampling_level: str = "token",
    episode_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step clipped surrogate loss ``-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)`` (docs/maths.md §5).

    Variants (docs/maths.md#12-variants), all off by default:

    * ``importance_sampling_level="sequence"`` (GSPO): ``rho`` is one ratio per episode,
      ``exp(mean_t(log pi - log pi_old))`` (:func:`sequence_log_ratio`), clipped at the episode level;
    * ``delta`` (two-sided clip, INTELLECT-2; TRL ``delta``): the unclipped term uses ``min(rho, delta)``, which caps
      the loss of a negative-advantage step whose ratio has grown past ``delta``;
    * ``clip_ratio_c`` (dual clip, Ye et al. 2020; verl ``clip_ratio_c``): for ``A < 0`` the loss is at most
      ``-c A`` (the objective is bounded below by ``c A``).

    :param log_prob: ``[*S]`` log-probabilities of the taken actions under the current policy.
    :param old_log_prob: ``[*S]`` the same under the behaviour policy.
    :param advantages: ``[*S]``.
    :param clip_range: ``eps_low`` (``None``: unclipped ratio surrogate ``-rho A``, as TRPO's).
    :param clip_range_high: ``eps_high`` (DAPO clip-higher); ``None``: same as ``clip_range``.
    :param delta: cap of the unclipped ratio, ``> 1`` (``None``: off); best above ``1 + eps_high``.
    :param clip_ratio_c: dual-clip constant ``c > 1`` (``None``: off).
    :param importance_sampling_level: ``"token"`` (default) or ``"sequence"``.
    :param episode_index: ``[*S]`` integer episode of each step (``"sequence"`` only; negative: padding).
    :return: ``(loss [*S], clipped [*S] bool)``: ``clipped`` marks steps where a bound is active (the ratio is outside
        the clip interval, above ``delta``, or above ``c`` with ``A < 0``).

    Example::

        >>> loss, clipped = clipped_surrogate_loss(torch.log(torch.tensor([1.5])), torch.zeros(1), torch.ones(1), 0.2)
        >>> loss, clipped
        (tensor([-1.2000]), tensor([True]))
        >>> clipped_surrogate_loss(torch.log(torch.tensor([4.0])), torch.zeros(1), -torch.ones(1), 0.2, clip_ratio_c=3.0)[0]
        tensor([3.])
    """
    clip_range = check_nonnegative("clip_range", clip_range)
    clip_range_high = check_nonnegative("clip_range_high", clip_range_high)
    delta = check_float(
        "delta", delta, low=1.0, low_inclusive=False, allow_none=True, allow_inf=True,
        hint="the cap of the ratio for negative advantages (INTELLECT-2), e.g. 1.5 or more than 1 + clip_range_high",
    )  # fmt: skip
    clip_ratio_c = check_float(
        "clip_ratio_c", clip_ratio_c, low=1.0, low_inclusive=False, allow_none=True, allow_inf=True,
        hint="the dual-clip constant c (the loss of a step with A < 0 is at most -c A), e.g. 3.0",
    )  # fmt: skip
    check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob, advantages=advantages)
    lr = _ratio_at_level(log_prob, old_log_prob, importance_sampling_level, episode_index)
    ratio = torch.exp(lr)
    advantages = advantages.detach()
    capped = ratio if delta is None else torch.clamp(ratio, max=delta)
    unclipped = capped * advantages
    if clip_range is None:
        loss, clipped = -unclipped, torch.zeros_like(ratio, dtype=torch.bool)
    else:
        high = clip_range if clip_range_high is None else clip_range_high
        clipped_ratio = torch.clamp(ratio, 1.0 - clip_range, 1.0 + high)
        loss = -torch.minimum(unclipped, clipped_ratio * advantages)
        clipped = (ratio < 1.0 - clip_range) | (ratio > 1.0 + high)
    if delta is not None:
        clipped = clipped | (ratio > delta)
    if clip_ratio_c is not None:
        negative = advantages < 0
        loss = torch.where(negative, torch.minimum(loss, -clip_ratio_c * advantages), loss)
        clipped = clipped | (negative & (ratio > clip_ratio_c))
    _check_surrogate(log_prob, old_log_prob, advantages, lr, ratio, loss)
    return loss, clipped


def cispo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    ratio_cap: float,
    *,
    importance_sampling_level: str = "token",
    episode_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CISPO's per-step loss ``-sg(min(rho, ratio_cap)) * A * log pi(a|s)`` (MiniMax-M1, arXiv:2506.13585).

    The importance weight is clipped and *detached*, so every step keeps a gradient: its gradient is
    ``-min(rho, cap) * A * grad log pi``, the importance-weighted policy gradient with the weight truncated at
    ``cap`` (PPO-clip instead zeroes the gradient of clipped steps). docs/maths.md#12-variants.

    :param ratio_cap: the largest importance weight, ``> 0`` (``1 + clip_range_high`` in the SB3 / TorchRL
        adapters; TRL's ``epsilon_high`` with ``loss_type="cispo"`` is this cap itself).
    :param importance_sampling_level: ``"token"`` or ``"sequence"`` (see :func:`clipped_surrogate_loss`).
    :return: ``(loss [*S], clipped [*S] bool)``: ``clipped`` marks the steps whose weight was capped.

    Example::

        >>> lp = torch.log(torch.tensor([2.0, 0.5])).requires_grad_()
        >>> loss, clipped = cispo_loss(lp, torch.zeros(2), torch.tensor([1.0, -1.0]), ratio_cap=1.2)
        >>> loss.sum().backward()
        >>> lp.grad, clipped
        (tensor([-1.2000,  0.5000]), tensor([ True, False]))
    """
    ratio_cap = check_float("ratio_cap", ratio_cap, low=0.0, low_inclusive=False, allow_inf=True, hint="e.g. 1.28 or 5.0")
    check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob, advantages=advantages)
    lr = _ratio_at_level(log_prob, old_log_prob, importance_sampling_level, episode_index)
    ratio = torch.exp(lr)
    advantages = advantages.detach()
    weight = torch.clamp(ratio, max=ratio_cap).detach()
    loss = -weight * advantages * log_prob
    _check_surrogate(log_prob, old_log_prob, advantages, lr, ratio, loss)
    return loss, ratio > ratio_cap


def sapo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    temperature_pos: float = 1.0,
    temperature_neg: float = 1.05,
    *,
    importance_sampling_level: str = "token",
    episode_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAPO's soft-gated per-step loss ``-(4 / tau) * sigmoid(tau * (rho - 1)) * A`` (arXiv:2511.20347).

    ``tau`` is ``temperature_pos`` where ``A > 0`` and ``temperature_neg`` elsewhere (TRL's
    ``sapo_temperature_pos`` / ``sapo_temperature_neg``). The gate's derivative is 1 at ``rho = 1`` (the policy
    gradient, as PPO) and decays smoothly as ``rho`` moves away, instead of PPO's hard cut. docs/maths.md#12-variants.

    :return: ``(loss [*S], clipped [*S] bool)``; ``clipped`` is all False (nothing is cut off).

    Example::

        >>> sapo_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, -1.0]))[0]
        tensor([-2.0000,  1.9048])
    """
    temperature_pos = check_float("sapo_temperature_pos", temperature_pos, low=0.0, low_inclusive=False, hint="e.g. 1.0")
    temperature_neg = check_float("sapo_temperature_neg", temperature_neg, low=0.0, low_inclusive=False, hint="e.g. 1.05")
    check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob, advantages=advantages)
    lr = _ratio_at_level(log_prob, old_log_prob, importance_sampling_level, episode_index)
    ratio = torch.exp(lr)
    advantages = advantages.detach()
    tau = torch.where(advantages > 0, temperature_pos, temperature_neg).to(ratio.dtype)
    loss = -(4.0 / tau) * torch.sigmoid(tau * (ratio - 1.0)) * advantages
    _check_surrogate(log_prob, old_log_prob, advantages, lr, ratio, loss)
    return loss, torch.zeros_like(ratio, dtype=torch.bool)


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
