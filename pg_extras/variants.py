"""Step and group selection, and reference refresh, for the GRPO variants (docs/maths.md#12-variants).

Each function is one variant of the LLM libraries, written for episodes of any env:

* :func:`informative_groups`: DAPO's *dynamic sampling* (drop the groups whose returns have no spread, or whose
  mean return lies outside ``keep_return_bounds``, TorchRL's name), before the update;
* :func:`mask_truncated_episodes`: TRL's ``mask_truncated_completions``: episodes that ended by truncation leave the
  loss (they still count in the group statistics, which are computed before);
* :func:`top_entropy_mask`: TRL's ``top_entropy_quantile`` ("Beyond the 80/20 rule"): only the highest-entropy
  fraction of the steps carries the policy-gradient term;
* :func:`mix_parameters_`: TR-DPO's reference refresh ``pi_ref <- alpha pi + (1 - alpha) pi_ref`` (TRL's
  ``ref_model_mixup_alpha``); ``alpha = 1`` is the hard copy.

All of them are pure torch on padded episodes ``[E, L]`` (or flat steps), as the rest of the core.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from pg_extras.group import _cell_stats
from pg_extras.validation import check_bool, check_finite, check_float, check_same_shape, check_unit_interval

__all__ = ["check_return_bounds", "informative_groups", "mask_truncated_episodes", "mix_parameters_", "top_entropy_mask"]


def informative_groups(
    returns: torch.Tensor,
    group_ids: torch.Tensor,
    keep_return_bounds: tuple[float | None, float | None] | None = None,
    drop_zero_spread: bool = True,
) -> tuple[torch.Tensor, int]:
    """DAPO's dynamic sampling: which episodes belong to *informative* groups (arXiv:2503.14476, eq. 11).

    A group is dropped when its returns have zero spread (relative to their magnitude and the dtype, as in
    :func:`pg_extras.group_normalize`: such a group has zero advantage and only dilutes the loss) or, with
    ``keep_return_bounds=(low, high)``, when its mean return is outside ``[low, high]`` (TorchRL's
    ``keep_return_bounds``; DAPO's ``0 < accuracy < 1`` is ``(eps, 1 - eps)`` for 0/1 rewards).

    :param returns: ``[E]`` episode returns.
    :param group_ids: ``[E]`` integer group of each episode.
    :param keep_return_bounds: ``(low, high)``, either may be ``None`` (unbounded); ``None``: no bound.
    :param drop_zero_spread: drop the zero-spread groups.
    :return: ``(keep [E] bool, n_dropped_groups)``.

    Example::

        >>> keep, dropped = informative_groups(torch.tensor([1.0, 2.0, 5.0, 5.0]), torch.tensor([0, 0, 1, 1]))
        >>> keep.tolist(), dropped
        ([True, True, False, False], 1)
    """
    drop_zero_spread = check_bool("drop_zero_spread", drop_zero_spread)
    low, high = _bounds(keep_return_bounds)
    if returns.dim() != 1 or group_ids.shape != returns.shape:
        raise ValueError(
            f"returns and group_ids must both have shape [E] (one per episode), got {tuple(returns.shape)} and "
            f"{tuple(group_ids.shape)}."
        )
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be integer labels, got dtype {group_ids.dtype}: pass integer group ids.")
    if not returns.is_floating_point():
        returns = returns.to(torch.get_default_dtype())
    check_finite("returns", returns, hint="the episode returns must be finite")
    if returns.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=returns.device), 0
    _, gid = torch.unique(group_ids, return_inverse=True)
    n_groups = int(gid.max()) + 1
    stats = _cell_stats(returns[:, None], torch.ones_like(returns[:, None], dtype=torch.bool), gid, n_groups)
    keep_group = torch.ones(n_groups, dtype=torch.bool, device=returns.device)
    if drop_zero_spread:
        keep_group &= ~stats.zero_spread[:, 0]
    mean = (stats.mean_u * stats.scale)[:, 0]
    if low is not None:
        keep_group &= mean >= low
    if high is not None:
        keep_group &= mean <= high
    return keep_group[gid], int((~keep_group).sum())


def check_return_bounds(bounds: tuple[float | None, float | None] | None) -> tuple[float | None, float | None] | None:
    """Validate ``keep_return_bounds``: ``None`` or ``(low, high)`` with ``low <= high`` (either may be ``None``)."""
    if bounds is None:
        return None
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"keep_return_bounds={bounds!r} is invalid: pass (low, high), e.g. (0.1, 0.9); either may be None.")
    low = check_float("keep_return_bounds[0]", bounds[0], allow_none=True, allow_inf=True, hint="the lowest mean return")
    high = check_float("keep_return_bounds[1]", bounds[1], allow_none=True, allow_inf=True, hint="the highest mean return")
    if low is not None and high is not None and low > high:
        raise ValueError(f"keep_return_bounds={tuple(bounds)!r} is invalid: low must be <= high.")
    return low, high


def _bounds(bounds: tuple[float | None, float | None] | None) -> tuple[float | None, float | None]:
    checked = check_return_bounds(bounds)
    return (None, None) if checked is None else checked


def mask_truncated_episodes(mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """The loss mask without the episodes that ended by truncation (TRL's ``mask_truncated_completions``; DAPO).

    A truncated episode was cut by a time limit: its return says nothing about how it would have ended, and its
    steps are left out of the loss. This is only the *loss* mask: compute the group statistics before, on every
    episode (as TRL does), so the other members keep the same advantages.

    :param mask: bool ``[E, L]`` valid steps.
    :param truncated: bool ``[E, L]`` (``True`` at the last step of a truncated episode; any valid step may be
        flagged) or ``[E]`` (one flag per episode).
    :return: bool ``[E, L]``: ``mask`` with the rows of truncated episodes cleared.

    Example::

        >>> mask = torch.tensor([[True, True], [True, False]])
        >>> mask_truncated_episodes(mask, torch.tensor([[False, True], [False, False]])).tolist()
        [[False, False], [True, False]]
    """
    mask = mask.to(torch.bool)
    truncated = truncated.to(torch.bool)
    if truncated.dim() == 1 and mask.dim() == 2:
        if truncated.shape[0] != mask.shape[0]:
            raise ValueError(
                f"truncated must have shape [{mask.shape[0]}] or {tuple(mask.shape)}, got {tuple(truncated.shape)}."
            )
        episode_truncated = truncated
    else:
        check_same_shape("mask", mask, truncated=truncated)
        if mask.dim() != 2:
            raise ValueError(f"mask must have shape [E, L] (episodes x steps), got {tuple(mask.shape)}.")
        episode_truncated = (truncated & mask).any(1)
    return mask & ~episode_truncated[:, None]


def top_entropy_mask(entropy: torch.Tensor, quantile: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Steps whose policy entropy is in the top ``quantile`` fraction of the valid steps (TRL's ``top_entropy_quantile``).

    Wang et al. 2025, "Beyond the 80/20 rule" (arXiv:2506.01939): the gradient of the high-entropy steps ("forks")
    carries the learning; the threshold is the ``1 - quantile`` quantile of the valid steps' entropies (linear
    interpolation, ``torch.quantile``) and a step is kept when its entropy is ``>=`` it, so ``quantile=1`` keeps
    every valid step. The entropy is treated as a constant.

    :param entropy: ``[*S]`` per-step entropy of the policy (or ``-log_prob`` without a closed form).
    :param quantile: fraction kept, in ``(0, 1]``.
    :param mask: bool ``[*S]`` valid steps (default: all).
    :return: bool ``[*S]``: valid steps in the top fraction.

    Example::

        >>> top_entropy_mask(torch.tensor([0.1, 0.9, 0.5, 0.7]), 0.5).tolist()
        [False, True, False, True]
    """
    quantile = check_float(
        "top_entropy_quantile", quantile, low=0.0, high=1.0, low_inclusive=False, hint="the fraction of steps kept, e.g. 0.2"
    )
    valid = torch.ones_like(entropy, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    check_same_shape("entropy", entropy, mask=valid)
    entropy = entropy.detach()
    if quantile >= 1.0 or not bool(valid.any()):
        return valid
    values = entropy[valid]
    check_finite("entropy", values, hint="the policy's entropy must be finite")
    threshold = torch.quantile(values.to(torch.float64), 1.0 - quantile).to(entropy.dtype)
    return valid & (entropy >= threshold)


@torch.no_grad()
def mix_parameters_(target: Iterable[torch.Tensor], source: Iterable[torch.Tensor], alpha: float) -> None:
    """In place: ``target <- alpha * source + (1 - alpha) * target`` (TR-DPO's soft reference update, arXiv:2404.09656).

    Floating-point tensors are mixed; the others (integer buffers such as counters) are copied from ``source`` when
    ``alpha > 0``. ``alpha = 1`` is the hard copy, ``alpha = 0`` leaves ``target`` unchanged.

    :param target: tensors of the reference (e.g. ``ref_policy.state_dict().values()``).
    :param source: tensors of the policy, in the same order and with the same shapes.
    :param alpha: ``ref_model_mixup_alpha`` in ``[0, 1]``.

    Example::

        >>> ref, pi = [torch.zeros(2)], [torch.ones(2)]
        >>> mix_parameters_(ref, pi, 0.25)
        >>> ref[0]
        tensor([0.2500, 0.2500])
    """
    alpha = check_unit_interval("ref_model_mixup_alpha", alpha, hint="pi_ref <- alpha pi + (1 - alpha) pi_ref; 1: copy")
    targets, sources = list(target), list(source)
    if len(targets) != len(sources):
        raise ValueError(f"target has {len(targets)} tensors but source has {len(sources)}: pass matching parameters.")
    for t, s in zip(targets, sources, strict=True):
        check_same_shape("target", t, source=s)
        if t.is_floating_point():
            t.lerp_(s.to(t.dtype), alpha)
        elif alpha > 0:
            t.copy_(s)
