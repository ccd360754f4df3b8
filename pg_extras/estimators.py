"""Advantage estimators behind one interface (docs/maths.md#10-estimators-x-update-rules).

:func:`estimate_advantages` maps time-major per-step signals ``[T, *B]`` to ``(advantages, value targets)`` for
every estimator in :data:`ADVANTAGE_ESTIMATORS`; any of them can feed any update rule of
:mod:`pg_extras.objectives`:

* ``"gae"``: generalised advantage estimation from a critic (:func:`pg_extras.gae`);
* ``"mc"``: Monte-Carlo returns-to-go ``G_t`` (:func:`pg_extras.returns_to_go`), no critic;
* ``"baseline"``: ``G_t - V(s_t)`` with a learned baseline (the critic regresses on ``G_t``);
* ``"group"``: group-relative advantages of whole episodes (:func:`pg_extras.group_relative_advantages`), no critic;
  its ``group_mode`` / ``group_scale`` also select the variants of docs/maths.md#12-variants (REINFORCE++,
  REINFORCE++-baseline, OPO, GPG).

A flat stream of whole episodes (``[S]``, episodes one after another, ``done`` at each last step) is the case
``B = ()``; an SB3 / TorchRL batch ``[T, N]`` is ``B = (N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pg_extras.episodes import EpisodeLayout
from pg_extras.group import group_relative_advantages
from pg_extras.returns import gae, returns_to_go
from pg_extras.validation import check_choice

__all__ = ["ADVANTAGE_ESTIMATORS", "CRITIC_ESTIMATORS", "AdvantageEstimate", "estimate_advantages"]

#: The estimators of :func:`estimate_advantages`.
ADVANTAGE_ESTIMATORS = ("gae", "mc", "baseline", "group")
#: The estimators that need a critic ``V(s)``.
CRITIC_ESTIMATORS = ("gae", "baseline")


@dataclass
class AdvantageEstimate:
    """Result of :func:`estimate_advantages` (all ``[T, *B]`` except the group statistics)."""

    advantages: torch.Tensor
    returns: torch.Tensor  # critic targets (gae: A + V; mc / baseline: G_t; group: G_t, for logging)
    frac_zero_std_groups: float = 0.0  # group only
    group_return_std: float = 0.0  # group only


def estimate_advantages(
    estimator: str,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor | None = None,
    *,
    gamma: float = 0.99,
    values: torch.Tensor | None = None,
    next_values: torch.Tensor | None = None,
    gae_lambda: float = 0.95,
    group_ids: torch.Tensor | None = None,
    group_mode: str = "outcome",
    group_scale: str = "group",
    rloo: bool = False,
    eps: float = 1e-8,
    baseline_returns: torch.Tensor | None = None,
) -> AdvantageEstimate:
    """Advantages of one batch with the estimator ``estimator``.

    :param estimator: one of :data:`ADVANTAGE_ESTIMATORS`.
    :param rewards: ``[T, *B]``.
    :param terminated: bool ``[T, *B]``.
    :param truncated: bool ``[T, *B]`` or ``None``.
    :param gamma: discount in [0, 1].
    :param values: ``V(s_t)`` ``[T, *B]`` (``gae``, ``baseline``).
    :param next_values: ``V(s_{t+1})`` ``[T, *B]``: needed by ``gae``; for ``mc`` / ``baseline`` it bootstraps
        truncated episodes and the last step (see :func:`pg_extras.returns_to_go`).
    :param gae_lambda: GAE's lambda.
    :param group_ids: ``[T, *B]`` integer group of each step's episode (``group``); every step of an episode carries
        the same id, and the batch must hold whole episodes (each ends with terminated or truncated).
    :param group_mode: one of :data:`pg_extras.ADVANTAGE_MODES` (``group``): ``outcome``, ``process``,
        ``return_to_go``, ``reinforce_pp``, ``reinforce_pp_baseline``, ``opo``, ``remax``.
    :param group_scale: one of :data:`pg_extras.ADVANTAGE_SCALES` (``group``): ``group``, ``batch``, ``none``, ``gpg``.
    :param rloo: leave-one-out baseline (``group``).
    :param eps: relative damping of the group std (``group``; see :func:`pg_extras.group_normalize`).
    :param baseline_returns: ``[T, *B]`` ReMax's baseline, the greedy episode's return of each step's group
        (``group`` with ``group_mode="remax"``; read at each episode's first step).

    Example::

        >>> r, term = torch.ones(4), torch.tensor([False, True, False, True])
        >>> estimate_advantages("mc", r, term, gamma=1.0).advantages
        tensor([2., 1., 2., 1.])
        >>> est = estimate_advantages("group", torch.tensor([1.0, 1.0, 1.0]), torch.tensor([False, True, True]),
        ...                           group_ids=torch.tensor([0, 0, 0]), gamma=1.0)
        >>> est.advantages  # episode returns 2 and 1 in one group
        tensor([ 0.7071,  0.7071, -0.7071])
    """
    check_choice("estimator", estimator, ADVANTAGE_ESTIMATORS)
    if estimator in CRITIC_ESTIMATORS and values is None:
        raise ValueError(f"estimator={estimator!r} needs values (the critic's V(s_t)); use 'mc' or 'group' without one.")
    if estimator == "gae":
        if next_values is None:
            raise ValueError("estimator='gae' needs next_values (V(s_{t+1}); see pg_extras.next_values_from_values).")
        adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma=gamma, gae_lambda=gae_lambda)
        return AdvantageEstimate(adv, ret)
    if estimator in ("mc", "baseline"):
        ret = returns_to_go(rewards, terminated, truncated, gamma=gamma, next_values=next_values)
        adv = ret if estimator == "mc" else ret - values.to(ret)  # type: ignore[union-attr]
        return AdvantageEstimate(adv, ret)
    if group_ids is None:
        raise ValueError("estimator='group' needs group_ids (the group of each step's episode).")
    done = terminated.to(torch.bool) if truncated is None else terminated.to(torch.bool) | truncated.to(torch.bool)
    time_major = rewards.reshape(rewards.shape[0], -1)
    done2 = done.reshape(time_major.shape)
    layout = EpisodeLayout.from_dones(done2)
    if not bool(layout.complete.all()):
        raise ValueError(
            "estimator='group' needs whole episodes: every episode of the batch must end with terminated or truncated "
            "(collect complete groups, e.g. with pg_extras.GroupScheduler)."
        )
    ep_rewards = layout.to_episodes(time_major)
    start = (layout.start_step, layout.env_index)
    ids = group_ids.reshape(time_major.shape)[start]
    baseline = None if baseline_returns is None else baseline_returns.reshape(time_major.shape)[start]
    result = group_relative_advantages(
        ep_rewards,
        layout.mask,
        group_ids=ids,
        mode=group_mode,
        scale=group_scale,
        rloo=rloo,
        gamma=gamma,
        eps=eps,
        baseline_returns=baseline,
    )
    adv = layout.to_steps(result.advantages).reshape(rewards.shape)
    ret = returns_to_go(rewards, terminated, truncated, gamma=gamma)
    return AdvantageEstimate(adv, ret, result.frac_zero_std_groups, result.group_return_std)
