"""Group-relative advantages (GRPO, docs/maths.md#6-grpo; DeepSeekMath; Dr. GRPO; RLOO).

Episodes are given in padded layout ``[E, L]`` with a validity ``mask`` (see :class:`pg_extras.EpisodeLayout`)
and a group label per episode (``group_ids`` ``[E]``, any integers; or ``group_size`` for contiguous groups).
Groups may have different sizes and their episodes different lengths.

Modes (docs/design.md):

* ``outcome``: ``A_i = (R_i - mean_g R) / std_g R`` with ``R_i`` the episode's (discounted) return, broadcast to its steps;
* ``process``: per-step rewards normalised over all steps of the group, ``A_{i,t} = sum_{t' >= t} r~_{i,t'}``;
* ``return_to_go``: ``A_{i,t} = (G_{i,t} - mean_j G_{j,t}) / std_j G_{j,t}`` over the members still running at ``t``;
* ``reinforce_pp`` (REINFORCE++): the returns-to-go ``G_{i,t}`` whitened over every valid step of the batch;
* ``reinforce_pp_baseline`` (REINFORCE++-baseline): ``G_{i,t} - mean_j G_{j,t}`` (the ``return_to_go`` centring),
  then whitened over the batch;
* ``opo`` (OPO): ``R_i - sum_j L_j R_j / sum_j L_j``, the length-weighted group mean as baseline;
* ``remax`` (ReMax): ``R_i - R_greedy(g_i)``, the return of the group's greedy episode as baseline
  (``baseline_returns``; :func:`remax_advantages`), not normalised.

Scale: ``group`` (std of the group, GRPO), ``batch`` (std over the whole batch), ``none`` (Dr. GRPO), ``gpg``
(GPG: no std, times ``alpha = B / #(R_i != 0)``). The two REINFORCE++ modes whiten over the batch themselves, so
``scale`` does not apply to them, nor to ``remax``.
docs/maths.md#12-variants.
``rloo=True`` replaces the group mean by the leave-one-out mean ``mean_{j != i}``. Standard deviations are
unbiased (as in DeepSeekMath / TRL).

Numerical robustness (docs/design.md): the statistics are computed on the values divided by a power of two near each
group's ``max|v|``, so advantages are invariant to the reward scale (1e-30 or 1e30 rewards give the same advantages
as unit rewards) and never overflow for finite values. A group has *zero spread*, and gets advantage exactly 0, when
its values agree to a few units in the last place of their magnitude (``max - min <= 4 eps_dtype max|v|``), not
below an absolute floor. Non-finite rewards and returns that overflow the dtype raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pg_extras.objectives import standardize
from pg_extras.returns import _discounted_cumsum
from pg_extras.validation import check_choice, check_finite, check_float, check_int, check_same_shape, check_unit_interval

__all__ = [
    "ADVANTAGE_MODES",
    "ADVANTAGE_SCALES",
    "GroupAdvantages",
    "gpg_alpha",
    "group_ids_from_size",
    "group_normalize",
    "group_relative_advantages",
    "remax_advantages",
]

ADVANTAGE_MODES = ("outcome", "process", "return_to_go", "reinforce_pp", "reinforce_pp_baseline", "opo", "remax")
ADVANTAGE_SCALES = ("group", "batch", "none", "gpg")
#: the modes ``scale`` does not apply to: the two that whiten over the batch themselves, and ReMax (unnormalised)
_WHITENED_MODES = ("reinforce_pp", "reinforce_pp_baseline", "remax")
#: a group's values have zero spread when ``max - min <= _ZERO_SPREAD_EPS * finfo(dtype).eps * max|values|``
_ZERO_SPREAD_EPS = 4.0
_RESCALE_HINT = "rescale the rewards, e.g. with VecNormalize(norm_reward=True) or a reward scale wrapper"


@dataclass
class GroupAdvantages:
    """Result of :func:`group_relative_advantages`."""

    advantages: torch.Tensor  # [E, L], zero on padding
    frac_zero_std_groups: float  # share of groups (of (group, step) cells for return_to_go) with zero spread
    group_return_std: float  # mean over groups of the std of the episode returns


def group_ids_from_size(num_episodes: int, group_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Contiguous group labels ``[0]*G + [1]*G + ...``; raises if ``group_size`` does not divide ``num_episodes``."""
    group_size = check_int("group_size", group_size, minimum=1)  # type: ignore[assignment]
    if num_episodes % group_size != 0:
        raise ValueError(
            f"group_size={group_size} does not divide the number of episodes ({num_episodes}): "
            "pass a batch made of whole groups or a group_size that divides it."
        )
    return torch.arange(num_episodes, device=device) // group_size


def _pow2_scale(maxabs: torch.Tensor) -> torch.Tensor:
    """A power of two ``s`` with ``maxabs / s`` in ``[1, 2)`` (1 where ``maxabs == 0``): dividing by it is exact."""
    _, exponent = torch.frexp(maxabs)  # maxabs = m * 2^e, m in [0.5, 1)
    scale = torch.pow(2.0, (exponent - 1).to(torch.float64)).to(maxabs.dtype)
    return torch.where(maxabs > 0, scale, torch.ones_like(maxabs))


@dataclass
class _CellStats:
    """Per-(group, column) statistics in rescaled units ``u = v / scale`` (``|u| < 2``: no overflow when squaring)."""

    count: torch.Tensor  # number of valid entries
    scale: torch.Tensor  # power of two near max|v| (1 for an empty or all-zero cell)
    maxabs_u: torch.Tensor  # max|u| = max|v| / scale, in [1, 2) (0 for an empty or all-zero cell)
    total_u: torch.Tensor  # sum of u
    mean_u: torch.Tensor
    std_u: torch.Tensor  # unbiased
    zero_spread: torch.Tensor  # bool: cell with >= 1 valid entry whose spread is below the dtype's resolution


def _cell_stats(values: torch.Tensor, valid: torch.Tensor, gid: torch.Tensor, n_groups: int) -> _CellStats:
    """Scale-invariant statistics of ``values [E, C]`` over the valid entries of each (group, column) cell.

    Everything is computed on ``u = v / s`` with ``s`` a power of two near the cell's ``max|v|``, so the results
    do not depend on the scale of the values (exactly for a power-of-two factor), never overflow for finite values,
    and the zero-spread test ``max u - min u <= 4 eps |u|_max`` is relative to the magnitude and the dtype.
    """
    dtype = values.dtype
    v = torch.where(valid, values, torch.zeros_like(values))
    shape = (n_groups, values.shape[1])
    index = gid[:, None].expand_as(v)
    count = values.new_zeros(shape).index_add_(0, gid, valid.to(dtype))
    maxabs = values.new_zeros(shape).scatter_reduce_(0, index, v.abs(), "amax", include_self=True)
    scale = _pow2_scale(maxabs)
    u = v / scale[gid]
    total_u = values.new_zeros(shape).index_add_(0, gid, u)
    mean_u = total_u / count.clamp(min=1)
    dev = torch.where(valid, u - mean_u[gid], torch.zeros_like(u))
    std_u = torch.sqrt(values.new_zeros(shape).index_add_(0, gid, dev * dev) / (count - 1).clamp(min=1))
    inf = torch.full_like(u, float("inf"))
    high = values.new_full(shape, -float("inf")).scatter_reduce_(0, index, torch.where(valid, u, -inf), "amax")
    low = values.new_full(shape, float("inf")).scatter_reduce_(0, index, torch.where(valid, u, inf), "amin")
    maxabs_u = maxabs / scale
    zero_spread = (count > 0) & (high - low <= _ZERO_SPREAD_EPS * torch.finfo(dtype).eps * maxabs_u)
    return _CellStats(count, scale, maxabs_u, total_u, mean_u, std_u, zero_spread)


def _mean_std(stats: _CellStats) -> float:
    """Mean over cells of ``std = std_u * scale`` as a Python float, without overflow (0.0 if there is none)."""
    if stats.std_u.numel() == 0:
        return 0.0
    std_u, scale = stats.std_u.reshape(-1).double(), stats.scale.reshape(-1).double()
    top = scale.max()
    mean = float((std_u * (scale / top)).mean()) * float(top)
    return min(mean, float(torch.finfo(stats.std_u.dtype).max))


def _centred(
    u: torch.Tensor, valid: torch.Tensor, gid: torch.Tensor, stats: _CellStats, rloo: bool, weights: torch.Tensor | None
) -> torch.Tensor:
    """``u`` minus its baseline (group mean, leave-one-out mean, or their ``weights``-weighted forms; OPO)."""
    n = stats.count[gid]
    if weights is None:
        if not rloo:
            return u - stats.mean_u[gid]
        # mean of the others: (sum - v) / (n - 1); a singleton group has no baseline -> advantage 0.
        baseline_u = (stats.total_u[gid] - u) / (n - 1).clamp(min=1)
        return torch.where(n > 1, u - baseline_u, torch.zeros_like(u))
    if weights.dim() == 1:
        weights = weights[:, None]
    if weights.dim() != 2 or weights.shape[0] != u.shape[0] or weights.shape[1] not in (1, u.shape[1]):
        raise ValueError(
            f"weights must have shape [{u.shape[0]}] or {tuple(u.shape)} (one weight per entry), got {tuple(weights.shape)}."
        )
    w = torch.where(valid, weights.expand_as(u).to(u.dtype), torch.zeros_like(u))
    check_finite("weights", w, hint="the baseline weights (e.g. episode lengths) must be finite")
    if bool((w < 0).any()):
        raise ValueError("weights must be >= 0 (e.g. the episode lengths of OPO's baseline).")
    w_total = u.new_zeros(stats.count.shape).index_add_(0, gid, w)[gid]
    wu_total = u.new_zeros(stats.count.shape).index_add_(0, gid, w * u)[gid]
    if rloo:
        w_total, wu_total = w_total - w, wu_total - w * u
    ok = w_total > 0
    if rloo:
        ok &= n > 1
    baseline_u = wu_total / torch.where(ok, w_total, torch.ones_like(w_total))
    return torch.where(ok, u - baseline_u, torch.zeros_like(u))


def gpg_alpha(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """GPG's gradient scale ``alpha = B / #(v != 0)`` over the valid entries (1 when none is non-zero).

    Chu et al. 2025 (GPG, arXiv:2504.02546), as verl's ``gpg`` estimator computes it from the episode returns: the
    mean of the per-episode losses counts every episode, ``alpha`` rescales it to the episodes with a signal.

    Example::

        >>> gpg_alpha(torch.tensor([1.0, 0.0, 0.0, 2.0]))
        tensor(2.)
    """
    valid = torch.ones_like(values, dtype=torch.bool) if valid is None else valid.to(torch.bool)
    total = valid.sum()
    nonzero = (valid & (values != 0)).sum()
    return (total.to(values.dtype) / nonzero.clamp(min=1).to(values.dtype)).where(nonzero > 0, values.new_ones(()))


def group_normalize(
    values: torch.Tensor,
    group_ids: torch.Tensor,
    valid: torch.Tensor | None = None,
    scale: str = "group",
    rloo: bool = False,
    eps: float = 1e-8,
    *,
    name: str = "values",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative normalisation of ``values [E]`` or ``[E, C]`` (columns normalised independently).

    The result does not depend on the scale of the values: ``group_normalize(c * v)`` equals ``group_normalize(v)``
    for any ``c > 0`` (``c`` times it for ``scale="none"``), from the smallest to the largest finite values of the
    dtype. A group has *zero spread* when its valid values differ by at most a few units in the last place of their
    largest magnitude (``max - min <= 4 * finfo(dtype).eps * max|v|``); such a group gets exactly 0.

    :param values: per-episode (or per-episode-per-step) values; the valid ones must be finite.
    :param group_ids: ``[E]`` integer group label of each row.
    :param valid: bool, same shape as ``values``: entries that take part (default: all).
    :param scale: ``group``, ``batch``, ``none`` or ``gpg`` (``none`` times ``#valid / #(valid values != 0)``).
    :param rloo: leave-one-out baseline instead of the group mean.
    :param eps: relative damping of the denominator: ``std + eps * max|v|`` (of the group for ``scale="group"``,
        of the batch for ``scale="batch"``), so a spread far below the values' magnitude is shrunk, not amplified.
    :param name: what ``values`` are, for the error messages.
    :param weights: positive weight of each entry (same shape as ``values``, or ``[E]``): the baseline is the
        weighted group mean ``sum w v / sum w`` (OPO's length weighting) instead of the plain mean; the std is not
        weighted.
    :return: ``(normalised, zero_std)``; ``normalised`` is 0 on invalid entries and in zero-spread groups;
        ``zero_std`` is bool ``[n_groups, C]`` (cells with at least one valid entry and zero spread).
    :raises ValueError: if a valid value is NaN or infinite, or (``scale="none"``) the centred values overflow.

    Example::

        >>> adv, _ = group_normalize(torch.tensor([1.0, 3.0, 5.0, 5.0]), torch.tensor([0, 0, 1, 1]))
        >>> adv
        tensor([-0.7071,  0.7071,  0.0000,  0.0000])
        >>> group_normalize(torch.tensor([1e-8, 3e-8]), torch.tensor([0, 0]))[0]
        tensor([-0.7071,  0.7071])
    """
    check_choice("scale", scale, ADVANTAGE_SCALES)
    check_float("eps", eps, low=0.0)
    squeeze = values.dim() == 1
    if squeeze:
        values = values[:, None]
        valid = None if valid is None else valid[:, None]
    if values.dim() != 2:
        raise ValueError(f"{name} must have shape [E] or [E, C], got {tuple(values.shape)}.")
    if valid is None:
        valid = torch.ones_like(values, dtype=torch.bool)
    check_same_shape(name, values, valid=valid)
    valid = valid.to(torch.bool)
    if group_ids.shape != values.shape[:1]:
        raise ValueError(
            f"group_ids must have shape [{values.shape[0]}] (one label per episode), got {tuple(group_ids.shape)}."
        )
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be integer labels, got dtype {group_ids.dtype}: pass integer group ids.")
    if not values.is_floating_point():
        values = values.to(torch.get_default_dtype())
    values = torch.where(valid, values, torch.zeros_like(values))
    check_finite(name, values, hint=f"the valid entries of {name} must be finite")
    _, gid = torch.unique(group_ids, return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    stats = _cell_stats(values, valid, gid, n_groups)
    cell_scale = stats.scale[gid]
    u = values / cell_scale
    centred_u = _centred(u, valid, gid, stats, rloo, weights)
    if scale == "group":
        # (v - mean) / (std + eps * max|v|) with v = s u: the scale s cancels.
        out = centred_u / (stats.std_u[gid] + eps * stats.maxabs_u[gid])
    elif scale == "batch":
        flat = values[valid][:, None]
        if flat.numel() > 1:  # (with a single valid value every group has zero spread)
            batch = _cell_stats(
                flat, torch.ones_like(flat, dtype=torch.bool), torch.zeros(len(flat), dtype=torch.int64, device=flat.device), 1
            )
            out = centred_u * (cell_scale / batch.scale[0, 0]) / (batch.std_u[0, 0] + eps * batch.maxabs_u[0, 0])
        else:
            out = torch.zeros_like(centred_u)
    else:
        out = centred_u * cell_scale
        if scale == "gpg":
            out = out * gpg_alpha(values, valid)
    out = torch.where(valid & ~stats.zero_spread[gid], out, torch.zeros_like(out))
    check_finite(
        f"group-centred {name}",
        out,
        hint=f"{_RESCALE_HINT}, or use scale='group'",
        derived_from=name,
    )
    if squeeze:
        out = out[:, 0]
    return out, stats.zero_spread


def _check_remax_arguments(mode: str, baseline_returns: torch.Tensor | None, rloo: bool) -> None:
    if mode == "remax":
        if baseline_returns is None:
            raise ValueError(
                "mode='remax' needs baseline_returns (the greedy episode's return of each episode's group): collect "
                "with GroupScheduler(greedy_member=True), as GRPO(advantage_mode='remax') and GroupedEnv do."
            )
        if rloo:
            raise ValueError("rloo=True replaces the group mean; mode='remax' uses the greedy return: pass rloo=False.")
    elif baseline_returns is not None:
        raise ValueError(f"baseline_returns is ReMax's greedy return: it needs mode='remax', got mode={mode!r}.")


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
    baseline_returns: torch.Tensor | None = None,
) -> GroupAdvantages:
    """Group-relative advantages for padded episodes (docs/design.md "GRPO", docs/maths.md#6-grpo).

    Invariant to the scale of the rewards (:func:`group_normalize`): 1e-8-scale and 1e20-scale rewards give the same
    advantages as 1-scale ones. A group with a single valid episode, or whose returns agree to the dtype's
    resolution, gets advantage 0 and is counted in ``frac_zero_std_groups``.

    :param rewards: ``[E, L]`` per-step rewards (padding ignored; valid steps must be finite).
    :param mask: bool ``[E, L]``, valid steps.
    :param group_ids: ``[E]`` integer group label of each episode; or give ``group_size`` for contiguous groups.
    :param group_size: episodes ``[kG, (k+1)G)`` form group ``k``; ``>= 2`` (a group compares episodes) and must
        divide ``E``.
    :param mode: ``outcome``, ``process``, ``return_to_go``, ``reinforce_pp``, ``reinforce_pp_baseline``, ``opo`` or
        ``remax`` (see the module docstring).
    :param scale: ``group``, ``batch``, ``none`` or ``gpg`` (ignored by the two ``reinforce_pp`` modes and ``remax``).
    :param rloo: leave-one-out baseline (with ``opo``: the length-weighted mean of the others).
    :param gamma: discount of the episode return (``outcome``, ``opo``, the ``gpg`` count) and of the returns-to-go
        (``return_to_go`` and the ``reinforce_pp`` modes).
    :param eps: relative damping of the std (see :func:`group_normalize`).
    :param baseline_returns: ``[E]`` the return of each episode's group's greedy episode (``remax`` only, required).
    :return: :class:`GroupAdvantages` with ``advantages [E, L]`` (0 on padding).
    :raises ValueError: on bad arguments, non-finite rewards, or returns / advantages that overflow the dtype.

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
    gamma = check_unit_interval("gamma", gamma)
    check_float("eps", eps, low=0.0, hint="the relative damping of the std, e.g. 1e-8")
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [E, L] (episodes x steps), got {tuple(rewards.shape)}.")
    check_same_shape("rewards", rewards, mask=mask)
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    mask = mask.to(torch.bool)
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    check_finite("rewards", rewards, hint="the environment returned NaN/inf rewards; check it or clip its rewards")
    _check_remax_arguments(mode, baseline_returns, rloo)
    E = rewards.shape[0]
    if group_ids is None:
        if group_size is None:
            raise ValueError("Pass group_ids (one label per episode) or group_size.")
        group_size = check_int("group_size", group_size, minimum=2, hint="a group compares at least two episodes")
        group_ids = group_ids_from_size(E, group_size, rewards.device)  # type: ignore[arg-type]
    elif group_size is not None:
        raise ValueError("Pass either group_ids or group_size, not both.")
    episode_valid = mask.any(1)
    disc = gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=torch.float64)
    totals = (rewards * disc.to(rewards.dtype)).sum(1)
    check_finite("returns", totals, hint=_RESCALE_HINT, derived_from="rewards")
    # GPG: no std, then alpha = B / #(R_i != 0) from the episode returns, whatever the mode
    inner_scale = "none" if scale == "gpg" else scale

    if mode in ("outcome", "opo"):
        lengths = mask.sum(1) if mode == "opo" else None
        adv, zero_std = group_normalize(
            totals, group_ids, episode_valid, inner_scale, rloo, eps, name="returns", weights=lengths
        )
        advantages = torch.where(mask, adv[:, None].expand_as(rewards), torch.zeros_like(rewards))
    elif mode == "remax":
        _, zero_std = group_normalize(totals, group_ids, episode_valid, "none", False, eps, name="returns")
        advantages = remax_advantages(rewards, mask, baseline_returns, gamma)  # type: ignore[arg-type]
    elif mode == "process":
        # One normalisation over all steps of the group: flatten steps into one column per group.
        flat_gid = group_ids[:, None].expand_as(rewards).reshape(-1)
        norm, zero_std = group_normalize(
            rewards.reshape(-1), flat_gid, mask.reshape(-1), inner_scale, rloo, eps, name="rewards"
        )
        norm = norm.reshape(rewards.shape)
        advantages = torch.where(mask, _discounted_cumsum(norm.t(), 1.0).t(), torch.zeros_like(rewards))
        check_finite("advantages", advantages, hint=f"{_RESCALE_HINT}, or use scale='group'", derived_from="rewards")
    else:
        rtg = _discounted_cumsum(rewards.t(), gamma).t()
        check_finite("returns-to-go", rtg, hint=_RESCALE_HINT, derived_from="rewards")
        if mode == "reinforce_pp":
            # REINFORCE++: no group baseline, the returns-to-go whitened over the batch
            _, zero_std = group_normalize(totals, group_ids, episode_valid, "none", rloo, eps, name="returns")
            advantages = standardize(rtg, mask, eps)
        elif mode == "reinforce_pp_baseline":
            centred, zero_std = group_normalize(rtg, group_ids, mask, "none", rloo, eps, name="returns-to-go")
            advantages = standardize(centred, mask, eps)
        else:
            advantages, zero_std = group_normalize(rtg, group_ids, mask, inner_scale, rloo, eps, name="returns-to-go")
    if scale == "gpg" and mode not in _WHITENED_MODES:
        advantages = advantages * gpg_alpha(totals, episode_valid)
        check_finite("advantages", advantages, hint=f"{_RESCALE_HINT}, or use scale='group'", derived_from="rewards")
    _, gid = torch.unique(group_ids, return_inverse=True)
    n_groups = int(gid.max()) + 1 if gid.numel() else 0
    ret_stats = _cell_stats(totals[:, None], episode_valid[:, None], gid, n_groups)
    n_cells = max(int(zero_std.numel()), 1)
    if mode in ("return_to_go", "reinforce_pp_baseline"):
        count = torch.zeros(n_groups, rewards.shape[1], device=rewards.device).index_add_(0, gid, mask.to(torch.float32))
        n_cells = max(int((count > 0).sum()), 1)
    return GroupAdvantages(
        advantages=advantages,
        frac_zero_std_groups=float(zero_std.sum()) / n_cells,
        group_return_std=_mean_std(ret_stats),
    )


def remax_advantages(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    baseline_returns: torch.Tensor,
    gamma: float = 1.0,
) -> torch.Tensor:
    """ReMax's advantages ``A_i = R_i - R_greedy(g_i)``, broadcast to every step of episode ``i`` (arXiv:2310.10505).

    The baseline of a group is the return of one extra episode played *greedily* (the policy's deterministic action)
    from the group's own reset seed; it depends on the start state only, so the gradient stays unbiased. Not
    normalised (as in ReMax and verl's ``remax``). docs/maths.md#12-variants.

    :param rewards: ``[E, L]`` per-step rewards of the sampled episodes.
    :param mask: bool ``[E, L]``, valid steps.
    :param baseline_returns: ``[E]`` the greedy return of each episode's group (gather it by group id).
    :param gamma: discount of the returns (the greedy return must use the same).
    :return: ``[E, L]`` advantages (0 on padding).

    Example::

        >>> rewards = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
        >>> remax_advantages(rewards, rewards > 0, torch.tensor([1.5, 1.5]))
        tensor([[ 0.5000,  0.5000],
                [-0.5000,  0.0000]])
    """
    gamma = check_unit_interval("gamma", gamma)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [E, L] (episodes x steps), got {tuple(rewards.shape)}.")
    check_same_shape("rewards", rewards, mask=mask)
    if baseline_returns.shape != rewards.shape[:1]:
        raise ValueError(
            f"baseline_returns must have shape [{rewards.shape[0]}] (the greedy return of each episode's group), got "
            f"{tuple(baseline_returns.shape)}."
        )
    if not rewards.is_floating_point():
        rewards = rewards.to(torch.get_default_dtype())
    mask = mask.to(torch.bool)
    rewards = torch.where(mask, rewards, torch.zeros_like(rewards))
    check_finite("rewards", rewards, hint="the environment returned NaN/inf rewards; check it or clip its rewards")
    check_finite("baseline_returns", baseline_returns, hint="the greedy episodes' returns must be finite")
    disc = gamma ** torch.arange(rewards.shape[1], device=rewards.device, dtype=torch.float64)
    totals = (rewards * disc.to(rewards.dtype)).sum(1)
    adv = totals - baseline_returns.to(totals)
    check_finite("advantages", adv, hint=_RESCALE_HINT, derived_from="rewards and baseline_returns")
    return torch.where(mask, adv[:, None].expand_as(rewards), torch.zeros_like(rewards))
