"""Advantage modules with the TorchRL value-estimator interface (call on a tensordict, write ``advantage``).

* :class:`MonteCarloEstimator`: discounted Monte-Carlo returns-to-go ``G_t`` (docs/maths.md §2) that tell termination
  from truncation, optionally minus a critic baseline ``V(s_t)`` (docs/maths.md#3-baselines-and-gae);
* :class:`GroupRelativeAdvantage`: GRPO's critic-free group-relative advantages (docs/maths.md#6-grpo, docs/design.md "GRPO").

Both accept the three layouts TorchRL collectors produce: fixed-frame batches ``[*B, T]`` (time last or named
``"time"``), padded complete trajectories ``[E, L]`` with a ``("collector", "mask")`` entry
(``Collector(trajs_per_batch=...)``), and concatenated trajectories ``[sum T_i]``. The maths is the core's
(:func:`pg_extras.estimate_advantages`: ``"mc"``, ``"baseline"``, ``"group"``); this module only moves data.

Steps whose target cannot be computed (episodes that do not end inside the batch, padding, incomplete groups)
are reported in the ``valid`` entry (``"shifted_valid"`` by default, the validity mask every TorchRL loss reads
with ``loss_mask_key="auto"``), or rejected with an error (``incomplete="raise"``, the default).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.objectives.value import ValueEstimatorBase

from pg_extras import (
    ADVANTAGE_MODES,
    ADVANTAGE_SCALES,
    EpisodeLayout,
    complete_episode_mask,
    estimate_advantages,
    informative_groups,
    returns_to_go,
)
from pg_extras.validation import check_bool, check_choice, check_float, check_int
from pg_extras.variants import check_return_bounds
from torchrl_pg_extras._base import PolicyGradientKeys
from torchrl_pg_extras._utils import (
    check_key_names,
    end_flags,
    from_time_major,
    gather_mask,
    get_required,
    time_dim,
    to_time_major,
)

__all__ = ["GroupRelativeAdvantage", "MonteCarloEstimator"]

_INCOMPLETE = ("raise", "mask")


def _incomplete_error(owner: str, n_steps: int, mask_key: NestedKey | None) -> ValueError:
    if mask_key is not None:  # no mask in the input: padding would look like episodes that do not end
        return ValueError(
            f"{owner}: {n_steps} steps belong to episodes that do not end inside this batch, and the input has no "
            f"validity mask {mask_key!r}. If the batch is padded (Collector(trajs_per_batch=...), GroupBatcher), its "
            f"padding is read as unfinished episodes: keep the collector's mask or name it with set_keys(mask=...). "
            f"Otherwise collect whole episodes, or pass incomplete='mask' to {owner} to drop those steps."
        )
    return ValueError(
        f"{owner}: {n_steps} valid steps belong to episodes that do not end inside this batch, so their Monte-Carlo "
        "return is unknown. Collect whole episodes (Collector(..., trajs_per_batch=..., traj_format='padded')), or "
        f"pass incomplete='mask' to {owner} to drop those steps (they are marked False in the 'valid' entry)."
    )


def _own_defaults(cls: type) -> type:
    """Copy the inherited key defaults into the class itself: TorchRL's ``ValueEstimatorBase.set_keys`` looks the
    accepted keys up in the class ``__dict__``, which an extending dataclass does not repeat."""
    for f in fields(cls):
        if f.name not in cls.__dict__:
            setattr(cls, f.name, f.default)
    return cls


class _EpisodeEstimatorBase(ValueEstimatorBase):
    """Shared plumbing: key handling, layout conversion, validity masks."""

    @_own_defaults
    @dataclass
    class _AcceptedKeys(PolicyGradientKeys):
        """Configurable tensordict keys (``set_keys``): those of :class:`~torchrl_pg_extras._base.PolicyGradientKeys`
        (``advantage`` and ``value_target`` are written, ``value`` is the critic's output) plus

        Attributes:
            group_id (NestedKey): per-step group label (:class:`GroupRelativeAdvantage`). Defaults to ``"group_id"``.
            greedy (NestedKey): ReMax's greedy-member flag (``GroupRelativeAdvantage(mode="remax")``, written by
                ``GroupedEnv(greedy_member=True)``). Defaults to ``"greedy"``.
            mask (NestedKey): input validity mask (padding). Defaults to ``("collector", "mask")``.
            valid (NestedKey): output validity mask. Defaults to ``"shifted_valid"`` (read by TorchRL losses).
            steps_to_next_obs (NestedKey): accepted for compatibility with TorchRL losses; unused.
        """

        group_id: NestedKey = "group_id"
        greedy: NestedKey = "greedy"
        mask: NestedKey = ("collector", "mask")
        valid: NestedKey = "shifted_valid"
        steps_to_next_obs: NestedKey = "steps_to_next_obs"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        *,
        value_network: TensorDictModuleBase | None = None,
        incomplete: str = "raise",
        differentiable: bool = False,
        time_dim: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        check_choice("incomplete", incomplete, _INCOMPLETE)
        time_dim = check_int("time_dim", time_dim, allow_none=True)
        super().__init__(value_network=value_network, differentiable=differentiable, device=device)
        self.incomplete = incomplete
        self.time_dim = time_dim

    @property
    def in_keys(self):
        keys = [("next", self.tensor_keys.reward), ("next", self.tensor_keys.done)]
        if self.value_network is not None:
            keys += list(self.value_network.in_keys)
        return keys

    @property
    def out_keys(self):
        return [self.tensor_keys.advantage, self.tensor_keys.value_target, self.tensor_keys.valid]

    def _signals(self, tensordict: TensorDictBase, time_dim_arg: int | None):
        """Time-major ``[T, N]`` reward (floating point), terminated, truncated, done and input validity."""
        owner = type(self).__name__
        tdim = time_dim(tensordict, time_dim_arg, owner=self)
        shape = tensordict.batch_size
        reward = get_required(tensordict, ("next", self.tensor_keys.reward), "reward", owner)
        done, terminated, truncated = end_flags(tensordict, self.tensor_keys, owner)
        done_tm = to_time_major(done, shape, tdim, "done")
        term_tm = to_time_major(terminated, shape, tdim, "terminated")
        trunc_tm = to_time_major(truncated, shape, tdim, "truncated")
        mask = gather_mask(tensordict, [self.tensor_keys.mask])
        self._has_mask = mask is not None
        valid_tm = torch.ones_like(done_tm) if mask is None else to_time_major(mask, shape, tdim, "mask")
        reward_tm = to_time_major(reward, shape, tdim, "reward")
        if not reward_tm.is_floating_point():  # integer rewards: returns and advantages are real numbers
            reward_tm = reward_tm.to(torch.get_default_dtype())
        reward_tm = torch.where(valid_tm, reward_tm, torch.zeros_like(reward_tm))
        return tdim, reward_tm, term_tm, trunc_tm, done_tm, valid_tm

    def _incomplete(self, incomplete: torch.Tensor, reward: torch.Tensor, done: torch.Tensor) -> ValueError:
        """The error for valid steps of episodes that do not end; it names a missing mask when the batch looks padded
        (the unfinished steps all follow an episode end and have zero reward, as TorchRL's padding does)."""
        padded = not self._has_mask and bool((reward[incomplete] == 0).all()) and bool(done.any(0)[incomplete.any(0)].all())
        return _incomplete_error(type(self).__name__, int(incomplete.sum()), self.tensor_keys.mask if padded else None)

    def set_keys(self, **kwargs) -> None:
        """TorchRL's ``set_keys``; an unknown name is refused with the list of valid ones."""
        check_key_names(self, kwargs)
        super().set_keys(**kwargs)

    def forward(
        self,
        tensordict: TensorDictBase,
        *,
        params: TensorDictBase | None = None,
        target_params: TensorDictBase | None = None,
        time_dim: int | None = None,
    ) -> TensorDictBase:
        """Write ``advantage``, ``value_target`` and ``valid`` into ``tensordict`` (in place) and return it."""
        shape = tensordict.batch_size
        tdim, reward, term, trunc, done, valid = self._signals(tensordict, time_dim)
        if tensordict.batch_size.numel() == 0:  # an empty batch: empty (finite) outputs
            zeros = torch.zeros(*shape, 1, dtype=reward.dtype, device=reward.device)
            tensordict.set(self.tensor_keys.advantage, zeros)
            tensordict.set(self.tensor_keys.value_target, zeros.clone())
            tensordict.set(self.tensor_keys.valid, torch.zeros(*shape, 1, dtype=torch.bool, device=reward.device))
            return tensordict
        advantage, returns, valid = self._estimate(tensordict, tdim, reward, term, trunc, done, valid, params, target_params)
        zero = torch.zeros_like(reward)
        tensordict.set(self.tensor_keys.advantage, from_time_major(torch.where(valid, advantage, zero), shape, tdim))
        tensordict.set(self.tensor_keys.value_target, from_time_major(torch.where(valid, returns, zero), shape, tdim))
        tensordict.set(self.tensor_keys.valid, from_time_major(valid, shape, tdim))
        return tensordict

    def _estimate(self, tensordict, tdim, reward, term, trunc, done, valid, params, target_params):
        """``(advantage, value target, valid)``, time-major ``[T, N]``, from the time-major signals."""
        raise NotImplementedError

    def _run_value_network(self, tensordict: TensorDictBase, params: TensorDictBase | None) -> torch.Tensor:
        net = self.value_network
        ctx = params.detach().to_module(net, preserve_module_state=False) if params is not None else contextlib.nullcontext()
        with ctx, torch.set_grad_enabled(self.differentiable):
            out = net(tensordict.select(*net.in_keys, strict=False))
        return get_required(out, self.tensor_keys.value, "value", type(self).__name__)

    def value_estimate(
        self,
        tensordict: TensorDictBase,
        target_params: TensorDictBase | None = None,
        next_value: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The value target (Monte-Carlo return) without writing anything else."""
        td = tensordict.copy()
        self(td, **kwargs)
        return td.get(self.tensor_keys.value_target)


class MonteCarloEstimator(_EpisodeEstimatorBase):
    """Discounted Monte-Carlo returns-to-go (docs/maths.md §2), optionally with a critic baseline (docs/maths.md §3).

    Writes ``value_target = G_t = sum_{k >= t} gamma^(k - t) r_k`` (the sum stops at the end of the episode,
    terminated or truncated) and ``advantage = G_t - V(s_t)`` (``G_t`` without a value network). With
    ``bootstrap_truncated=True`` and a value network, a time-limit truncation is bootstrapped:
    ``G_t = r_t + gamma V(s_{t+1})`` at the truncated step (:func:`pg_extras.returns_to_go`).

    Episodes that do not end inside the batch have no Monte-Carlo return: by default they raise (collect whole
    episodes with ``Collector(..., trajs_per_batch=...)``); ``incomplete="mask"`` marks their steps False in the
    ``valid`` entry instead (and sets their advantage to 0).

    Args:
        gamma (float): discount factor in [0, 1].

    Keyword Args:
        value_network (TensorDictModule, optional): critic ``V(s)`` used as a baseline. ``None``: no baseline
            (pure REINFORCE); if the input already holds ``tensor_keys.value`` it is used as the baseline.
        bootstrap_truncated (bool, optional): bootstrap time-limit truncations, and the last step of episodes cut
            by the batch end, with the critic (then no episode is incomplete). Defaults to ``False`` (pure
            Monte-Carlo: a truncated episode is summed up to its last reward, a cut one is incomplete).
        incomplete (str, optional): ``"raise"`` (default) or ``"mask"``.
        differentiable (bool, optional): propagate gradients through the value network. Defaults to ``False``.
        time_dim (int, optional): the time dimension (default: named ``"time"``, else the last one).
        device (torch.device, optional): kept for TorchRL compatibility.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_pg_extras import MonteCarloEstimator
        >>> done = torch.tensor([[False, True, False, True]]).unsqueeze(-1)
        >>> td = TensorDict({"next": {"reward": torch.ones(1, 4, 1), "done": done, "terminated": done}}, [1, 4])
        >>> _ = MonteCarloEstimator(gamma=0.5)(td)
        >>> td["advantage"].squeeze(-1)
        tensor([[1.5000, 1.0000, 1.5000, 1.0000]])
    """

    def __init__(
        self,
        gamma: float = 0.99,
        *,
        value_network: TensorDictModuleBase | None = None,
        bootstrap_truncated: bool = False,
        incomplete: str = "raise",
        differentiable: bool = False,
        time_dim: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        gamma = check_float("gamma", gamma, low=0.0, high=1.0)
        bootstrap_truncated = check_bool("bootstrap_truncated", bootstrap_truncated)
        if bootstrap_truncated and value_network is None:
            raise ValueError("bootstrap_truncated=True needs a value_network to bootstrap with: pass value_network=critic.")
        super().__init__(
            value_network=value_network, incomplete=incomplete, differentiable=differentiable, time_dim=time_dim, device=device
        )
        self.gamma = float(gamma)
        self.bootstrap_truncated = bootstrap_truncated

    def _estimate(self, tensordict, tdim, reward, term, trunc, done, valid, params, target_params):
        shape = tensordict.batch_size
        next_values = None
        if self.bootstrap_truncated:
            # truncated steps and the last step of episodes cut by the batch end are bootstrapped: all complete
            nv = self._run_value_network(tensordict.get("next"), target_params if target_params is not None else params)
            next_values = to_time_major(nv, shape, tdim, "next value").to(reward.dtype)
            complete = torch.ones_like(done)
        else:
            complete = complete_episode_mask(done)
        incomplete = valid & ~complete
        if self.incomplete == "raise" and bool(incomplete.any()):
            raise self._incomplete(incomplete, reward, done)
        valid = valid & complete
        if self.value_network is not None:
            values = to_time_major(self._run_value_network(tensordict, params), shape, tdim, "value").to(reward.dtype)
            tensordict.set(self.tensor_keys.value, from_time_major(values, shape, tdim))
        else:
            stored = tensordict.get(self.tensor_keys.value, default=None)
            values = None if stored is None else to_time_major(stored, shape, tdim, "value").to(reward.dtype)
        estimator = "mc" if values is None else "baseline"
        est = estimate_advantages(estimator, reward, term, trunc, gamma=self.gamma, values=values, next_values=next_values)
        return est.advantages, est.returns, valid


class GroupRelativeAdvantage(_EpisodeEstimatorBase):
    """Critic-free group-relative advantages (GRPO, docs/maths.md#6-grpo; docs/design.md "GRPO").

    Episodes are grouped by the ``group_id`` entry (written by :class:`~torchrl_pg_extras.GroupedEnv`; the label of
    an episode is the one of its first step), or, without that entry, ``group_size`` consecutive episodes form a
    group (the rows of a padded trajectory batch). The advantages are those of
    :func:`pg_extras.estimate_advantages` with ``estimator="group"`` (:func:`pg_extras.group_relative_advantages`):

    * ``mode="outcome"``: ``(R_i - mean_g R) / std_g R`` broadcast to every step of episode ``i``;
    * ``mode="process"``: per-step rewards normalised over the group, summed from ``t`` on;
    * ``mode="return_to_go"``: ``(G_{i,t} - mean_j G_{j,t}) / std_j G_{j,t}`` over the members running at ``t``;
    * ``scale``: ``"group"`` (GRPO), ``"batch"``, ``"none"`` (Dr. GRPO); ``rloo``: leave-one-out baseline;
    * ``mode="remax"`` (ReMax, docs/maths.md#remax): ``R_i - R_greedy``, the baseline being the discounted return of
      the group's greedy episode (the steps flagged ``greedy``: ``GroupedEnv(greedy_member=True)`` with
      :class:`~torchrl_pg_extras.GreedyMemberPolicy`); the greedy episode gets ``valid`` False (no loss term), and
      ``group_size`` counts the sampled members only;
    * and the other modes / scales of :data:`pg_extras.ADVANTAGE_MODES` / :data:`pg_extras.ADVANTAGE_SCALES`.

    A group whose returns have zero spread (relative to their scale) gets advantage 0, never NaN; :attr:`last_stats`
    records the share of such groups and the mean within-group return std. The value target (written for
    interoperability) is the discounted return-to-go.

    **Dynamic sampling** (DAPO, arXiv:2503.14476 eq. 11; docs/maths.md#dynamic-sampling): with
    ``dynamic_sampling=True`` the groups whose (discounted) returns have zero spread are dropped, and with
    ``keep_return_bounds=(low, high)`` (TorchRL ``MCAdvantage``'s name) so are those whose mean return is outside
    ``[low, high]`` (:func:`pg_extras.informative_groups`, as SB3's ``GRPO``). A dropped group's steps get advantage 0
    and ``valid`` False, so the losses leave them out of every term and denominator (``loss_mask_key="auto"`` reads
    ``valid``), and the advantages of the other groups are computed without them (as SB3's ``GRPO``, which drops them
    before the update). This filters the groups of the batch it is given, so a batch may train on fewer groups (or
    none: then every step is invalid and the loss is 0; skip that update, an optimizer with momentum would still
    move). To *keep collecting until the batch is full* of informative groups, DAPO's procedure, pass the same
    options to :class:`~torchrl_pg_extras.GroupBatcher` instead. :attr:`groups_dropped_uninformative` counts the
    dropped groups (cumulative); :attr:`last_stats` then also has ``groups_dropped_uninformative`` and
    ``frac_groups_dropped_uninformative`` (this batch).

    Args:
        group_size (int, optional): expected episodes per group. With a ``group_id`` entry, every group must have
            exactly that many episodes (checked); without it, it defines contiguous groups and must divide the
            number of episodes. ``None``: groups as labelled, any size.

    Keyword Args:
        mode (str): ``"outcome"`` (default), ``"process"`` or ``"return_to_go"``.
        scale (str): ``"group"`` (default), ``"batch"`` or ``"none"``.
        rloo (bool): leave-one-out baseline. Defaults to ``False``.
        gamma (float): discount of the returns. Defaults to ``1.0``.
        eps (float): damping of the group std (:func:`pg_extras.group_normalize`). Defaults to ``1e-8``.
        incomplete (str): ``"raise"`` (default) rejects episodes that do not end in the batch and groups with a
            wrong number of episodes; ``"mask"`` drops them (``valid`` False, advantage 0).
        dynamic_sampling (bool): drop the groups whose returns have zero spread (see above). Defaults to ``False``.
        keep_return_bounds (tuple, optional): ``(low, high)``: also drop the groups whose mean return is outside
            ``[low, high]``; either may be ``None`` (unbounded). Defaults to ``None``.
        time_dim (int, optional): the time dimension (default: named ``"time"``, else the last one).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_pg_extras import GroupRelativeAdvantage
        >>> reward = torch.tensor([[1.0, 1.0], [1.0, 0.0], [3.0, 0.0], [1.0, 0.0]]).unsqueeze(-1)
        >>> mask = torch.tensor([[True, True], [True, False], [True, False], [True, False]])
        >>> done = torch.tensor([[False, True], [True, False], [True, False], [True, False]]).unsqueeze(-1)
        >>> td = TensorDict({"next": {"reward": reward, "done": done, "terminated": done},
        ...                  "collector": {"mask": mask}}, [4, 2])
        >>> _ = GroupRelativeAdvantage(group_size=2)(td)
        >>> td["advantage"].squeeze(-1)
        tensor([[ 0.7071,  0.7071],
                [-0.7071,  0.0000],
                [ 0.7071,  0.0000],
                [-0.7071,  0.0000]])
        >>> td["next", "reward"][2, 0] = 1.0  # group 1 (rows 2, 3): both returns 1, no signal
        >>> est = GroupRelativeAdvantage(group_size=2, dynamic_sampling=True)
        >>> _ = est(td)
        >>> td["shifted_valid"].squeeze(-1)[:, 0].tolist(), est.groups_dropped_uninformative
        ([True, True, False, False], 1)
    """

    def __init__(
        self,
        group_size: int | None = None,
        *,
        mode: str = "outcome",
        scale: str = "group",
        rloo: bool = False,
        gamma: float = 1.0,
        eps: float = 1e-8,
        incomplete: str = "raise",
        dynamic_sampling: bool = False,
        keep_return_bounds: tuple[float | None, float | None] | None = None,
        time_dim: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        dynamic_sampling = check_bool("dynamic_sampling", dynamic_sampling)
        keep_return_bounds = check_return_bounds(keep_return_bounds)
        eps = check_float("eps", eps, low=0.0, low_inclusive=False, hint="the damping of the group std, e.g. 1e-8")
        group_size = check_int("group_size", group_size, minimum=2, allow_none=True, hint="episodes per group")
        check_choice("mode", mode, ADVANTAGE_MODES)
        check_choice("scale", scale, ADVANTAGE_SCALES)
        gamma = check_float("gamma", gamma, low=0.0, high=1.0)
        rloo = check_bool("rloo", rloo)
        super().__init__(value_network=None, incomplete=incomplete, time_dim=time_dim, device=device)
        self.group_size = group_size
        self.mode = mode
        self.scale = scale
        self.rloo = rloo
        self.gamma = gamma
        self.eps = eps
        self.dynamic_sampling = dynamic_sampling
        self.keep_return_bounds = keep_return_bounds
        self.groups_dropped_uninformative = 0  # groups dropped by dynamic sampling / keep_return_bounds (cumulative)
        self.last_stats: dict[str, float] = {}

    @property
    def in_keys(self):
        keys = super().in_keys
        keys = keys if self.group_size is not None else [*keys, self.tensor_keys.group_id]
        return [*keys, self.tensor_keys.greedy] if self.mode == "remax" else keys

    def _episode_groups(self, tensordict: TensorDictBase, layout: EpisodeLayout, keep: torch.Tensor, ep_mask, tdim):
        """Group label of every episode (``[E]`` int64) and the episodes to keep (whole groups only)."""
        owner = type(self).__name__
        gid_entry = tensordict.get(self.tensor_keys.group_id, default=None)
        if gid_entry is None:
            if self.group_size is None:
                raise KeyError(
                    f"{owner}: no group label {self.tensor_keys.group_id!r} in the input and no group_size: collect with "
                    "GroupedEnv (it writes the labels), rename the key with set_keys(group_id=...), or pass group_size."
                )
            n_ep = int(keep.sum())
            if n_ep % self.group_size != 0:
                raise ValueError(
                    f"{owner}: group_size={self.group_size} does not divide the number of complete episodes in the batch "
                    f"({n_ep}): collect a multiple of group_size episodes, or use GroupedEnv + GroupBatcher."
                )
            ep_gid = torch.full_like(layout.lengths, -1)
            ep_gid[keep] = torch.arange(n_ep, device=keep.device) // self.group_size
            return ep_gid, keep
        if gid_entry.is_floating_point() or gid_entry.dtype == torch.bool:
            raise TypeError(
                f"{owner}: the group label {self.tensor_keys.group_id!r} has dtype {gid_entry.dtype}; group labels must "
                "be integers (GroupedEnv writes int64 labels): cast them with .long() if they are whole numbers."
            )
        gid_steps = layout.to_episodes(to_time_major(gid_entry, tensordict.batch_size, tdim, "group_id").to(torch.int64))
        ep_gid = gid_steps[:, 0]
        if bool(((gid_steps != ep_gid[:, None]) & ep_mask).any()):
            raise ValueError(f"{owner}: the group label {self.tensor_keys.group_id!r} changes inside an episode.")
        if self.group_size is not None and bool(keep.any()):
            labels, inverse, counts = torch.unique(ep_gid[keep], return_inverse=True, return_counts=True)
            wrong = counts != self.group_size
            if bool(wrong.any()):
                if self.incomplete == "raise":
                    raise ValueError(
                        f"{owner}: {int(wrong.sum())} of {labels.numel()} groups do not have group_size={self.group_size} "
                        f"complete episodes (sizes {sorted(set(counts.tolist()))}). Feed whole groups: wrap the collector in "
                        "GroupBatcher, or pass incomplete='mask' to drop partial groups."
                    )
                kept_idx = keep.nonzero().squeeze(1)
                keep = keep.clone()
                keep[kept_idx[wrong[inverse]]] = False
        return ep_gid, keep

    def _estimate(self, tensordict, tdim, reward, term, trunc, done, valid, params, target_params):
        layout = EpisodeLayout.from_dones(done)
        ep_mask = layout.mask & layout.to_episodes(valid, fill=False)  # [E, L] valid steps
        has_steps = ep_mask.any(1)
        incomplete = has_steps & ~layout.complete
        if self.incomplete == "raise" and bool(incomplete.any()):
            raise self._incomplete(valid & layout.step_mask(incomplete), reward, done)
        whole = has_steps & layout.complete
        greedy_ep = self._greedy_episodes(tensordict, layout, tdim) & whole if self.mode == "remax" else None
        sampled = whole if greedy_ep is None else whole & ~greedy_ep
        ep_gid, keep = self._episode_groups(tensordict, layout, sampled, ep_mask, tdim)
        baseline = None
        if greedy_ep is not None:
            keep, baseline = self._greedy_baselines(reward, done, layout, ep_gid, keep, greedy_ep)
        filtered = self._informative(reward, done, layout, ep_gid, keep) if self._filters else None
        if filtered is not None:
            keep, dropped_stats = filtered
        valid = valid & layout.step_mask(keep)
        # the kept episodes as one flat stream of whole episodes (column by column, time in order): the core's layout
        flat = valid.t()
        stats = {"frac_zero_std_groups": 0.0, "group_return_std": 0.0, "num_groups": 0.0, "num_episodes": 0.0}
        advantage, returns = torch.zeros_like(reward), torch.zeros_like(reward)
        if bool(flat.any()):
            est = estimate_advantages(
                "group",
                reward.t()[flat],
                term.t()[flat],
                trunc.t()[flat],
                gamma=self.gamma,
                group_ids=self._per_step(layout, ep_gid)[flat],
                group_mode=self.mode,
                group_scale=self.scale,
                rloo=self.rloo,
                eps=self.eps,
                baseline_returns=None if baseline is None else self._per_step(layout, baseline)[flat],
            )
            advantage.t()[flat] = est.advantages
            returns.t()[flat] = est.returns
            stats = {
                "frac_zero_std_groups": est.frac_zero_std_groups,
                "group_return_std": est.group_return_std,
                "num_groups": float(torch.unique(ep_gid[keep]).numel()),
                "num_episodes": float(keep.sum()),
            }
        if filtered is not None:
            stats.update(dropped_stats)
        self.last_stats = stats
        return advantage, returns, valid

    @staticmethod
    def _per_step(layout: EpisodeLayout, per_episode: torch.Tensor) -> torch.Tensor:
        """``[E]`` -> the ``[L, N]``-transposed per-step layout the core is fed with (``.t()`` of the time-major one)."""
        return layout.to_steps(per_episode[:, None].expand(layout.mask.shape)).t()

    def _greedy_episodes(self, tensordict: TensorDictBase, layout: EpisodeLayout, tdim) -> torch.Tensor:
        """``[E]`` bool: the episodes flagged as a group's greedy member (ReMax)."""
        flag = tensordict.get(self.tensor_keys.greedy, default=None)
        if flag is None:
            raise KeyError(
                f"{type(self).__name__}(mode='remax'): no greedy flag {self.tensor_keys.greedy!r} in the input: collect with "
                "GroupedEnv(env, group_size, greedy_member=True) and GreedyMemberPolicy(actor), or rename the key with "
                "set_keys(greedy=...)."
            )
        steps = to_time_major(flag, tensordict.batch_size, tdim, "greedy").to(torch.bool)
        return layout.to_episodes(steps, fill=False)[:, 0]

    def _greedy_baselines(self, reward, done, layout: EpisodeLayout, ep_gid, keep, greedy_ep):
        """ReMax: the greedy return of each kept episode's group (``[E]``); groups without a greedy episode are dropped
        (``incomplete="mask"``) or raise."""
        returns = layout.to_episodes(returns_to_go(reward, done, gamma=self.gamma))[:, 0]
        baseline = torch.full_like(returns, float("nan"))
        greedy_idx = greedy_ep.nonzero().squeeze(1)
        if greedy_idx.numel():
            labels = ep_gid[greedy_idx]
            if labels.unique().numel() != labels.numel():
                raise ValueError(f"{type(self).__name__}(mode='remax'): a group has two greedy episodes in the batch.")
            labels, order = torch.sort(labels)
            pos = torch.searchsorted(labels, ep_gid.contiguous()).clamp(max=labels.numel() - 1)
            baseline = torch.where(labels[pos] == ep_gid, returns[greedy_idx[order[pos]]], baseline)
        missing = keep & torch.isnan(baseline)
        if bool(missing.any()):
            if self.incomplete == "raise":
                raise ValueError(
                    f"{type(self).__name__}(mode='remax'): {int(missing.sum())} episodes belong to groups without a greedy "
                    "episode in the batch: feed whole groups with GroupBatcher over GroupedEnv(greedy_member=True), or pass "
                    "incomplete='mask'."
                )
            keep = keep & ~missing
        return keep, torch.nan_to_num(baseline)

    @property
    def _filters(self) -> bool:
        return self.dynamic_sampling or self.keep_return_bounds is not None

    def _informative(self, reward, done, layout: EpisodeLayout, ep_gid: torch.Tensor, keep: torch.Tensor):
        """DAPO's dynamic sampling: ``keep`` without the uninformative groups (:func:`pg_extras.informative_groups`)."""
        n_groups = int(torch.unique(ep_gid[keep]).numel())
        dropped = 0
        if n_groups:
            # the discounted return of each episode: its return-to-go at its first step (as SB3's GRPO)
            returns = layout.to_episodes(returns_to_go(reward, done, gamma=self.gamma))[:, 0]
            kept_idx = keep.nonzero().squeeze(1)
            informative, dropped = informative_groups(
                returns[kept_idx], ep_gid[kept_idx], self.keep_return_bounds, drop_zero_spread=self.dynamic_sampling
            )
            keep = keep.clone()
            keep[kept_idx[~informative]] = False
        self.groups_dropped_uninformative += dropped
        stats = {
            "groups_dropped_uninformative": float(self.groups_dropped_uninformative),
            "frac_groups_dropped_uninformative": dropped / max(n_groups, 1),
        }
        return keep, stats
