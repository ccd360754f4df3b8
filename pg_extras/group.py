"""Group-relative advantages (GRPO, seed 2.6; DeepSeekMath; Dr. GRPO; RLOO).

Episodes are given in padded layout ``[E, L]`` with a validity ``mask`` (see :class:`pg_extras.EpisodeLayout`)
and a group label per episode (``group_ids`` ``[E]``, any integers; or ``group_size`` for contiguous groups).
Groups may have different sizes and their episodes different lengths.

Modes (DESIGN.md):

* ``outcome``: ``A_i = (R_i - mean_g R) / std_g R`` with ``R_i`` the episode's (discounted) return, broadcast to its steps;
* ``process``: per-step rewards normalised over all steps of the group, ``A_{i,t} = sum_{t' >= t} r~_{i,t'}``;
* ``return_to_go``: ``A_{i,t} = (G_{i,t} - mean_j G_{j,t}) / std_j G_{j,t}`` over the members still running at ``t``.

Scale: ``group`` (std of the group, GRPO), ``batch`` (std over the whole batch), ``none`` (Dr. GRPO).
``rloo=True`` replaces the group mean by the leave-one-out mean ``mean_{j != i}``. Standard deviations are
unbiased (as in DeepSeekMath / TRL). A group whose values have zero spread gets advantage exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pg_extras._checks import check_choice, check_finite, check_nonnegative, check_same_shape, check_unit_interval
from pg_extras.returns import discounted_cumsum

__all__ = [
    "ADVANTAGE_MODES",
    "ADVANTAGE_SCALES",
    "GroupAdvantages",
    "group_ids_from_size",
    "group_normalize",
    "group_relative_advantages",
]

ADVANTAGE_MODES = ("outcome", "process", "return_to_go")
ADVANTAGE_SCALES = ("group", "batch", "none")
_ZERO_STD = 1e-6


@dataclass
class GroupAdvantages:
    """Result of :func:`group_relative_advantages`."""

    advantages: torch.Tensor  # [E, L], zero on padding
    frac_zero_std_groups: float  # share of groups (of (group, step) cells for return_to_go) with zero spread
    group_return_std: float  # mean over groups of the std of the episode returns


def group_ids_from_size(num_episodes: int, group_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Contiguous group labels ``[0]*G + [1]*G + ...``; raises if ``group_size`` does not divide ``num_episodes``."""
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}.")
    if num_episodes % group_size != 0:
        raise ValueError(
            f"group_size={group_size} does not divide the number of episodes ({num_episodes}): "
            "pass a batch made of whole groups or a group_size that divides it."
        )
    return torch.arange(num_episodes, device=device) // group_size


def _group_stats(values: torch.Tensor, valid: torch.Tensor, gid: torch.Tensor, n_groups: int):
    """Per-(group, column) count, mean and unbiased std of ``values [E, C]`` over valid entries."""
    v = torch.where(valid, values, torch.zeros_like(values))
    w = valid.to(values.dtype)
    shape = (n_groups, values.shape[1])
    count = values.new_zeros(shape).index_add_(0, gid, w)
    total = values.new_zeros(shape).index_add_(0, gid, v)
    mean = total / count.clamp(min=1)
    sq = values.new_zeros(shape).index_add_(0, gid, w * (v - mean[gid]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    return count, total, mean, std


def group_normalize(
    values: torch.Tensor,
    group_ids: torch.Tensor,
    valid: torch.Tensor | None = None,
    scale: str = "group",
    rloo: bool = False,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative normalisation of ``values [E]`` or ``[E, C]`` (columns normalised independently).

    :param values: per-episode (or per-episode-per-step) values.
    :param group_ids: ``[E]`` integer group label of each row.
    :param valid: bool, same shape as ``values``: entries that take part (default: all).
    :param scale: ``group``, ``batch`` or ``none``.
    :param rloo: leave-one-out baseline instead of the group mean.
    :param eps: added to the std in the denominator.
    :return: ``(normalised, zero_std)``; ``normalised`` is 0 on invalid entries and in zero-spread groups;
        ``zero_std`` is bool ``[n_groups, C]`` (cells with at least one valid entry and zero spread).

    Example::

        >>> adv, _ = group_normalize(torch.tensor([1.0, 3.0, 5.0, 5.0]), torch.tensor([0, 0, 1, 1]))
        >>> adv
        tensor([-0.7071,  0.7071,  0.0000,  0.0000])
    """
    check_choice("scale", scale, ADVANTAGE_SCALES)
    squeeze = values.dim() == 1
    if squeeze:
        values = values[:, None]
        valid = None if valid is None else valid[:, None]
    if valid is None:
        valid = torch.ones_like(values, dtype=torch.bool)
    if group_ids.shape != values.shape[:1]:
        raise ValueError(
            f"group_ids must have shape [{values.shape[0]}] (one label per episode), got {tuple(group_ids.shape)}."
        )
    _, gid = torch.unique(group_ids, return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    count, total, mean, std = _group_stats(values, valid, gid, n_groups)
    if rloo:
        # mean of the others: (sum - v) / (n - 1); a singleton group has no baseline -> advantage 0.
        n = count[gid]
        baseline = (total[gid] - values) / (n - 1).clamp(min=1)
        centred = torch.where(n > 1, values - baseline, torch.zeros_like(values))
    else:
        centred = values - mean[gid]
    zero_std = (std <= _ZERO_STD * (1.0 + mean.abs())) & (count > 0)
    if scale == "group":
        out = centred / (std[gid] + eps)
    elif scale == "batch":
        flat = values[valid]
        batch_std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
        out = centred / (batch_std + eps)
    else:
        out = centred
    out = torch.where(valid & ~zero_std[gid], out, torch.zeros_like(out))
    if squeeze:
        out = out[:, 0]
    return out, zero_std


def group_relative_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    group_ids: torch.Tensor | None = None,
    group_size: int | None = None,
    mode: str = "outcome",
    scale: str = "group",
    rloo: bool = False,
    gamma: float = 1.0,
    eps: float = 1e-8,
) -> GroupAdvantages:
    """Group-relative advantages for padded episodes (DESIGN.md "GRPO", seed 2.6).

    :param rewards: ``[E, L]`` per-step rewards (padding ignored).
    :param mask: bool ``[E, L]``, valid steps.
    :param group_ids: ``[E]`` group label of each episode; or give ``group_size`` for contiguous groups.
    :param group_size: episodes ``[kG, (k+1)G)`` form group ``k``; must divide ``E``.
    :param mode: ``outcome``, ``process`` or ``return_to_go``.
    :param scale: ``group``, ``batch`` or ``none``.
    :param rloo: leave-one-out baseline.
    :param gamma: discount of the episode return (``outcome``) and of the returns-to-go (``return_to_go``).
    :param eps: added to the std.
    :return: :class:`GroupAdvantages` with ``advantages [E, L]`` (0 on padding).

    Example::

        >>> rewards = torch.tensor([[1.0, 1.0], [1.0, 0.0], [2.0, 0.0], [2.0, 0.0]])
        >>> mask = torch.tensor([[True, True], [True, False], [True, False], [True, False]])
        >>> group_relative_advantages(rewards, mask, group_size=2).advantages
        tensor([[ 0.7071,  0.7071],
                [-0.7071,  0.0000],
                [ 0.0000,  0.0000],
                [ 0.0000,  0.0000]])
    """
    check_choice("mode", mode, ADVANTAGE_MODES)
    check_choice("scale", scale, ADVANTAGE_SCALES)
    check_unit_interval("gamma", gamma)
    check_nonnegative("eps", eps)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [E, L] (episodes x steps), got {tuple(rewards.shape)}.")
    check_same_shape("rewards", rewards, mask=mask)
    mask = mask.to(torch.bool)
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    check_finite("rewards", rewards)
    E = rewards.shape[0]
    if group_ids is None:
        if group_size is None:
            raise ValueError("Pass group_ids (one label per episode) or group_size.")
        group_ids = group_ids_from_size(E, group_size, rewards.device)
    elif group_size is not None:
        raise ValueError("Pass either group_ids or group_size, not both.")
    episode_valid = mask.any(1)

    if mode == "outcome":
        disc = gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
        returns = (rewards * disc).sum(1)
        adv, zero_std = group_normalize(returns, group_ids, episode_valid, scale, rloo, eps)
        advantages = torch.where(mask, adv[:, None].expand_as(rewards), torch.zeros_like(rewards))
    elif mode == "process":
        # One normalisation over all steps of the group: flatten steps into one column per group.
        flat_gid = group_ids[:, None].expand_as(rewards).reshape(-1)
        norm, zero_std = group_normalize(rewards.reshape(-1), flat_gid, mask.reshape(-1), scale, rloo, eps)
        norm = norm.reshape(rewards.shape)
        advantages = torch.where(mask, discounted_cumsum(norm.t(), 1.0).t(), torch.zeros_like(rewards))
    else:
        rtg = discounted_cumsum(rewards.t(), gamma).t()
        advantages, zero_std = group_normalize(rtg, group_ids, mask, scale, rloo, eps)
    _, gid = torch.unique(group_ids, return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    disc = gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=rewards.dtype)
    totals = (rewards * disc).sum(1)
    _, _, _, ret_std = _group_stats(totals[:, None], episode_valid[:, None], gid, n_groups)
    n_cells = max(int(zero_std.numel()), 1)
    if mode == "return_to_go":
        count, _, _, _ = _group_stats(rewards, mask, gid, n_groups)
        n_cells = max(int((count > 0).sum()), 1)
    return GroupAdvantages(
        advantages=advantages,
        frac_zero_std_groups=float(zero_std.sum()) / n_cells,
        group_return_std=float(ret_std.mean()) if n_groups else 0.0,
    )
