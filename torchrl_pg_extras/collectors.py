"""Batches of whole GRPO groups from any TorchRL collector over a :class:`~torchrl_pg_extras.GroupedEnv`.

A collector yields steps in the order the sub-envs take them; the members of a group finish at different times,
on different sub-envs, in different collector batches, possibly in different worker processes.
:class:`GroupBatcher` keeps the steps of unfinished groups, yields padded batches of whole groups as soon as they are
complete, bounds how many policy versions a group may span, and counts every env step the collector took. Which
groups are complete, their lag, the stale and dead ones, is :class:`pg_extras.GroupHarvest`'s bookkeeping, driven
from the steps' labels (the :class:`~pg_extras.GroupScheduler` lives in the env, maybe in a worker process); the
batcher does the tensor work: keeping the steps, gathering and padding whole groups, counting env steps.
With ``dynamic_sampling`` it also holds back the groups without a signal (DAPO's dynamic sampling, decided by
:func:`pg_extras.informative_groups`) and keeps collecting until a batch is full of informative groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import torch
from tensordict import TensorDictBase, pad_sequence
from tensordict.utils import NestedKey
from torchrl.envs import EnvBase, TransformedEnv

from pg_extras import CompletedGroup, GroupHarvest, episode_returns, informative_groups
from pg_extras.signal import NO_SIGNAL_CAUSES, SignalMonitor
from pg_extras.validation import check_bool, check_choice, check_float, check_int
from pg_extras.variants import check_return_bounds
from torchrl_pg_extras._framework import collector_env
from torchrl_pg_extras.envs import ID_NAMESPACE, GreedyMemberPolicy, GroupedEnv

__all__ = ["GroupBatcher"]


class GroupBatcher:
    """Iterate over a collector and yield batches of ``groups_per_batch`` complete groups.

    Works with any collector whose env is a :class:`~torchrl_pg_extras.GroupedEnv` (or wraps one):
    ``Collector(env, policy, frames_per_batch=...)``, ``Collector(env_fns, ..., backend="process")`` /
    :class:`~torchrl.collectors.MultiSyncCollector` (one ``GroupedEnv`` per worker, each with its own ``id_offset``,
    so that no group mixes members of two workers) and asynchronous collectors. Steps are matched to their episode
    by ``episode_id``, so fixed-frame batches (the fastest collection, and the one whose every stepped frame reaches
    :attr:`env_steps`) are the natural input: the unfinished part of an episode is kept until its end arrives.
    Trajectory collectors (``trajs_per_batch=...``, padded with a mask) work too, but then :attr:`env_steps` only
    sees the steps of finished episodes.

    **Policy versions.** :attr:`policy_version` counts policy updates. With ``auto_version=True`` (default) it
    advances each time the training loop asks for the next batch (the loop updates the policy on each batch it gets);
    otherwise call :meth:`new_policy_version` after each update. A group's *lag* is the number of versions between its
    first collected step and the batch that uses it; groups whose lag exceeds ``max_policy_lag`` are dropped and
    counted (:attr:`groups_dropped_stale`). The losses use the behaviour log-probs stored at collection, so the
    importance ratios stay correct whatever the lag.

    **Env steps.** :attr:`env_steps` counts every env step the collector delivered (including the steps of episodes
    still running and of groups held back or dropped): it is the count to budget and report progress with.

    **Dynamic sampling** (DAPO, arXiv:2503.14476 eq. 11; docs/maths.md#dynamic-sampling). With
    ``dynamic_sampling=True`` a complete group whose discounted returns (``gamma``) have zero spread is dropped (its
    advantages would all be 0: it only dilutes the loss), and with ``keep_return_bounds=(low, high)`` (TorchRL
    ``MCAdvantage``'s name) so is a group whose mean return is outside ``[low, high]``; the decision is
    :func:`pg_extras.informative_groups`'. The batcher keeps collecting until ``groups_per_batch`` informative groups
    are complete, so every batch is full, which is what DAPO does (SB3's ``GRPO`` instead trains each rollout on the
    informative groups it has). The dropped groups are counted in :attr:`groups_dropped_uninformative` (and in
    :attr:`stats`); their env steps still count in :attr:`env_steps`. Pass ``gamma`` equal to the advantage
    module's. :class:`~torchrl_pg_extras.GroupRelativeAdvantage` takes the same two options to filter a batch it is
    given without collecting more.

    Args:
        collector (iterable of TensorDict): the collector (or any iterable of such batches).
        group_size (int, optional): episodes per group. ``None`` (default): the ``group_size`` of the collector's
            :class:`GroupedEnv` (found through ``collector.env``); must be given when the env lives in worker
            processes. A value that differs from the env's raises ``ValueError``.
        groups_per_batch (int): groups per yielded batch. Defaults to ``1``.

    Keyword Args:
        max_policy_lag (int, optional): drop complete groups whose lag exceeds this many policy versions
            (``None``: no bound). Defaults to ``None``.
        auto_version (bool): advance :attr:`policy_version` on each batch requested after a yield. Defaults to
            ``True``.
        traj_format (str): ``"padded"`` (default): ``[episodes, L]`` with a mask; ``"cat"``: the episodes one after
            another, ``[sum T_i]`` (no padding; the advantage modules and losses read both), as ``Collector``'s
            ``traj_format``.
        group_id_key, episode_id_key (NestedKey): the labels written by :class:`GroupedEnv`. Default to
            ``"group_id"`` and ``"episode_id"``.
        mask_key (NestedKey): the validity mask of padded batches (read on input, written on output). Defaults to
            ``("collector", "mask")``.
        done_key (NestedKey): the end-of-episode flag. Defaults to ``("next", "done")``.
        dynamic_sampling (bool): drop the complete groups whose returns have zero spread and keep collecting (see
            above). Defaults to ``False``.
        keep_return_bounds (tuple, optional): ``(low, high)``: also drop the groups whose mean return is outside
            ``[low, high]`` (either may be ``None``). Defaults to ``None``.
        gamma (float): discount of the returns that decide (the advantage module's ``gamma``). Defaults to ``1.0``.
        reward_key (NestedKey): the reward read by the filter. Defaults to ``("next", "reward")``.
        greedy_member (bool, optional): the groups have ReMax's greedy member (``GroupedEnv(greedy_member=True)``):
            a group is complete when it has ended too, and its episode is yielded after the group's ``group_size``
            sampled ones (``greedy_key`` True on its steps; ``GroupRelativeAdvantage(mode="remax")`` reads it and
            leaves it out of the loss). ``None`` (default): the env's; ``False`` when the env is out of reach.
        greedy_key (NestedKey): the greedy flag written by :class:`GroupedEnv`. Defaults to ``"greedy"``.
        max_uninformative_groups (int, optional): with ``dynamic_sampling`` / ``keep_return_bounds``, raise
            ``RuntimeError`` (naming the cause) after this many complete groups in a row were dropped, instead of
            collecting forever on a task without signal (a :class:`pg_extras.signal.NoSignalWarning` comes after 100);
            ``None``: no bound. Defaults to ``1000``.

    Yields:
        TensorDict of batch size ``[groups_per_batch * group_size, L]`` (``group_size + 1`` rows per group with the
        greedy member): one episode per row, the members of each group in consecutive rows (by member index, the
        greedy one last), zero-padded along time (:func:`tensordict.pad_sequence`), with ``mask_key`` marking the
        valid steps; with ``traj_format="cat"``, ``[sum T_i]``: the same episodes one after
        another.

    Examples:
        >>> from torchrl.collectors import Collector
        >>> from torchrl.envs import GymEnv, SerialEnv
        >>> from torchrl_pg_extras import GroupBatcher, GroupedEnv
        >>> env = GroupedEnv(SerialEnv(3, lambda: GymEnv("CartPole-v1")), group_size=2, seed=0)
        >>> collector = Collector(env, None, frames_per_batch=30, auto_register_policy_transforms=False)
        >>> batcher = GroupBatcher(collector, groups_per_batch=2)  # group_size read from the env
        >>> batch = next(iter(batcher))
        >>> batch.shape[0], bool((batch["group_id"][0::2, 0] == batch["group_id"][1::2, 0]).all())
        (4, True)
        >>> batcher.env_steps >= int(batch["collector", "mask"].sum())  # running episodes count too
        True
        >>> collector.shutdown()
        >>> collector = Collector(env, None, frames_per_batch=30, auto_register_policy_transforms=False)
        >>> dapo = GroupBatcher(collector, groups_per_batch=2, dynamic_sampling=True)  # DAPO: informative groups only
        >>> next(iter(dapo)).shape[0], dapo.groups_dropped_uninformative >= 0  # held-back groups are counted
        (4, True)
        >>> collector.shutdown()
    """

    def __init__(
        self,
        collector: Iterable[TensorDictBase],
        group_size: int | None = None,
        groups_per_batch: int = 1,
        *,
        max_policy_lag: int | None = None,
        auto_version: bool = True,
        traj_format: str = "padded",
        group_id_key: NestedKey = "group_id",
        episode_id_key: NestedKey = "episode_id",
        mask_key: NestedKey = ("collector", "mask"),
        done_key: NestedKey = ("next", "done"),
        dynamic_sampling: bool = False,
        keep_return_bounds: tuple[float | None, float | None] | None = None,
        gamma: float = 1.0,
        reward_key: NestedKey = ("next", "reward"),
        greedy_member: bool | None = None,
        greedy_key: NestedKey = "greedy",
        max_uninformative_groups: int | None = 1000,
    ) -> None:
        if collector is None or not hasattr(collector, "__iter__"):
            raise TypeError(
                f"GroupBatcher needs a collector (an iterable of TensorDicts), got {type(collector).__name__}: "
                "pass Collector(GroupedEnv(env, group_size), policy, frames_per_batch=...)."
            )
        groups_per_batch = check_int("groups_per_batch", groups_per_batch, minimum=1)
        max_policy_lag = check_int("max_policy_lag", max_policy_lag, minimum=0, allow_none=True, hint="None: no bound")
        auto_version = check_bool("auto_version", auto_version)
        check_choice("traj_format", traj_format, ("padded", "cat"), hint="as Collector's traj_format")
        group_size = check_int("group_size", group_size, minimum=2, allow_none=True, hint="the GroupedEnv's group_size")
        dynamic_sampling = check_bool("dynamic_sampling", dynamic_sampling)
        keep_return_bounds = check_return_bounds(keep_return_bounds)
        gamma = check_float("gamma", gamma, low=0.0, high=1.0, hint="the advantage module's discount, e.g. 1.0")
        greedy_member = check_bool("greedy_member", greedy_member, allow_none=True)
        max_uninformative_groups = check_int(
            "max_uninformative_groups", max_uninformative_groups, minimum=1, allow_none=True, hint="None: no bound"
        )
        env = _grouped_env_of(collector)
        if env is not None:
            if group_size is not None and group_size != env.group_size:
                raise ValueError(
                    f"GroupBatcher(group_size={group_size}) over a GroupedEnv with group_size={env.group_size}: "
                    f"its groups would never fill. Pass group_size={env.group_size} (or leave it out)."
                )
            group_size = env.group_size
            if greedy_member is not None and greedy_member != env.greedy_member:
                raise ValueError(
                    f"GroupBatcher(greedy_member={greedy_member}) over a GroupedEnv with greedy_member="
                    f"{env.greedy_member}: leave greedy_member out (it is read from the env)."
                )
            greedy_member = env.greedy_member
        elif group_size is None:
            raise ValueError(
                "GroupBatcher could not find the GroupedEnv of this collector (its env lives in worker processes or "
                "is not a GroupedEnv): pass group_size=<the GroupedEnv's group_size>."
            )
        self.greedy_member = bool(greedy_member)
        self.greedy_key = greedy_key
        self._harvest = GroupHarvest(
            group_size, max_policy_lag, ID_NAMESPACE, greedy_member=self.greedy_member, name="GroupBatcher"
        )
        self.collector = collector
        self.group_size = group_size
        self.groups_per_batch = groups_per_batch
        self.auto_version = auto_version
        self.traj_format = traj_format
        self.group_id_key = group_id_key
        self.episode_id_key = episode_id_key
        self.mask_key = mask_key
        self.done_key = done_key
        self.dynamic_sampling = dynamic_sampling
        self.keep_return_bounds = keep_return_bounds
        self.gamma = float(gamma)
        self.reward_key = reward_key
        self.groups_dropped_uninformative = 0  # groups dropped by dynamic sampling / keep_return_bounds (cumulative)
        self.max_uninformative_groups = max_uninformative_groups
        self._uninformative_streak = 0  # groups dropped since the last informative one
        self.signal_monitor = SignalMonitor("GroupBatcher")
        self._greedy_policy_checked = False
        self._ready: list[CompletedGroup] = []  # informative complete groups waiting for a full batch
        self._ready_steps: list[tuple[TensorDictBase, torch.Tensor]] = []  # their steps and episode ids
        self.env_steps = 0
        self.last_max_lag = 0
        self._chunks: list[TensorDictBase] = []  # kept steps (of pending groups), in collection order
        self._chunk_ids: list[torch.Tensor] = []  # their episode ids

    # -- the wrapped collector's controls (anything else: ``batcher.collector``) ------------------------------
    def update_policy_weights_(self, *args, **kwargs) -> None:
        """The collector's ``update_policy_weights_`` (after each policy update, for collectors with their own copy)."""
        self.collector.update_policy_weights_(*args, **kwargs)

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        """The collector's ``set_seed``."""
        return self.collector.set_seed(seed, static_seed=static_seed)

    def shutdown(self) -> None:
        """Shut the collector down (its workers, for multi-process and Ray collectors)."""
        self.collector.shutdown()

    # -- policy versions and group counters (the harvest's) ------------------------------------------------
    def new_policy_version(self) -> int:
        """Call after each policy update (only with ``auto_version=False``); returns the new version."""
        return self._harvest.new_policy_version()

    @property
    def policy_version(self) -> int:
        return self._harvest.policy_version

    @policy_version.setter
    def policy_version(self, value: int) -> None:
        self._harvest.policy_version = check_int("policy_version", value, minimum=0)

    @property
    def max_policy_lag(self) -> int | None:
        return self._harvest.max_policy_lag

    @max_policy_lag.setter
    def max_policy_lag(self, value: int | None) -> None:
        self._harvest.max_policy_lag = check_int("max_policy_lag", value, minimum=0, allow_none=True, hint="None: no bound")

    @property
    def groups_yielded(self) -> int:
        # the harvest counts every complete group handed over, including the ones dropped or held back here
        return self._harvest.groups_completed - self.groups_dropped_uninformative - len(self._ready)

    @property
    def groups_dropped_stale(self) -> int:
        return self._harvest.groups_dropped_stale

    @property
    def groups_abandoned(self) -> int:
        return self._harvest.groups_abandoned

    @property
    def num_pending(self) -> int:
        """Steps kept for groups that are not yielded yet (incomplete, or informative and waiting for a full batch)."""
        return sum(c.shape[0] for c in self._chunks) + sum(steps.shape[0] for steps, _ in self._ready_steps)

    @property
    def _filters(self) -> bool:
        return self.dynamic_sampling or self.keep_return_bounds is not None

    @property
    def stats(self) -> dict[str, float]:
        """Counters to log: env steps, policy version, groups yielded / dropped as stale / abandoned, last lag (and
        groups dropped as uninformative, with ``dynamic_sampling`` or ``keep_return_bounds``)."""
        stats = {
            "env_steps": float(self.env_steps),
            "policy_version": float(self.policy_version),
            "groups_yielded": float(self.groups_yielded),
            "groups_dropped_stale": float(self.groups_dropped_stale),
            "groups_abandoned": float(self.groups_abandoned),
            "group_lag_max": float(self.last_max_lag),
        }
        if self._filters:
            stats["groups_dropped_uninformative"] = float(self.groups_dropped_uninformative)
        return stats

    # -- intake -------------------------------------------------------------------------------------------
    def add(self, batch: TensorDictBase) -> None:
        """Take in one collector batch (any batch shape, time last)."""
        flat = batch.reshape(-1)
        valid = flat.get(self.mask_key, default=None)
        valid = None if valid is None else valid.reshape(-1).to(torch.bool)
        self.env_steps += flat.shape[0] if valid is None else int(valid.sum())
        eid = flat.get(self.episode_id_key, default=None)
        if eid is None:
            raise KeyError(
                f"GroupBatcher: no {self.episode_id_key!r} entry in the collected data: build the collector on "
                "GroupedEnv(env, group_size) (it labels every step with its group and episode)."
            )
        eid = eid.reshape(-1)
        done = flat.get(self.done_key).reshape(-1).to(torch.bool)
        keep = eid >= 0 if valid is None else valid & (eid >= 0)  # -1: lockstep throw-away episodes
        harvest = self._harvest
        dropped = harvest.dropped_running
        if dropped:  # running members of dropped groups: their steps are discarded
            seen = set(torch.unique(eid[keep]).tolist())
            discard = torch.isin(eid, torch.tensor(sorted(dropped), dtype=eid.dtype))
            ended = set(eid[discard & done].tolist())
            for episode in dropped:
                if episode in ended:
                    harvest.end(episode)
                elif episode not in seen:
                    harvest.abandon(episode)  # it stopped arriving (its env was reset)
            keep &= ~discard
        if not bool(keep.all()):
            if not bool(keep.any()):
                self._discard()
                return
            flat, eid, done = flat[keep], eid[keep], done[keep]
        gid = flat.get(self.group_id_key).reshape(-1)
        if gid.is_floating_point():
            raise TypeError(f"GroupBatcher: {self.group_id_key!r} must hold integer labels, got {gid.dtype}.")
        new = [e for e in torch.unique(eid).tolist() if not harvest.tracks(e)]
        if new:
            first = (eid.unsqueeze(0) == torch.tensor(new, dtype=eid.dtype).unsqueeze(1)).to(torch.int8).argmax(1)
            greedy = [False] * len(new)
            self._check_greedy_policy(flat)
            if self.greedy_member:
                flag = flat.get(self.greedy_key, default=None)
                if flag is None:
                    raise KeyError(
                        f"GroupBatcher(greedy_member=True): no {self.greedy_key!r} entry in the collected data: build the "
                        "collector on GroupedEnv(env, group_size, greedy_member=True)."
                    )
                greedy = flag.reshape(-1)[first].tolist()
            for episode, group, is_greedy in zip(new, gid[first].tolist(), greedy, strict=True):
                harvest.start(episode, group, greedy=bool(is_greedy))
        for episode in eid[done].tolist():
            harvest.end(episode)
        self._chunks.append(flat)
        self._chunk_ids.append(eid)
        dead = harvest.pop_dead()  # groups whose missing members were lost (a full reset)
        self._discard([e for episodes in dead.values() for e in episodes])

    def _check_greedy_policy(self, flat: TensorDictBase) -> None:
        """ReMax: warn once when the steps were not acted by :class:`GreedyMemberPolicy` (the greedy members sampled)."""
        if not self.greedy_member or self._greedy_policy_checked:
            return
        self._greedy_policy_checked = True  # once: the first new episodes tell
        if flat.get(GreedyMemberPolicy.marker_key, default=None) is None:
            warnings.warn(
                "GroupBatcher(greedy_member=True): the collected steps were not acted by GreedyMemberPolicy, so the "
                "greedy members sampled their actions like the others and ReMax's baseline is not greedy: pass "
                "GreedyMemberPolicy(actor) as the collector's policy (the loss keeps the actor).",
                RuntimeWarning,
                stacklevel=3,
            )

    def _discard(self, episodes: Iterable[int] = ()) -> None:
        """Remove the kept steps of ``episodes`` and of the episodes the harvest discarded."""
        episodes = set(episodes).union(self._harvest.pop_discarded())
        if episodes:
            self._take(sorted(episodes))

    def _take(self, episodes: list[int]) -> tuple[TensorDictBase, torch.Tensor] | None:
        """Remove the kept steps of ``episodes`` and return them with their episode ids (collection order)."""
        if not self._chunks:
            return None
        store = torch.cat(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        ids = torch.cat(self._chunk_ids) if len(self._chunk_ids) > 1 else self._chunk_ids[0]
        taken = torch.isin(ids, torch.tensor(episodes, dtype=ids.dtype))
        rest = ~taken
        self._chunks, self._chunk_ids = ([store[rest]], [ids[rest]]) if bool(rest.any()) else ([], [])
        return store[taken], ids[taken]

    # -- output -------------------------------------------------------------------------------------------
    def _order(self, steps: TensorDictBase, ids: torch.Tensor, episodes: list[int]) -> tuple[TensorDictBase, torch.Tensor]:
        """``steps`` episode after episode in the order of ``episodes`` (each in time order), and the episode lengths."""
        order_ids = torch.tensor(episodes, dtype=ids.dtype)
        sorter = torch.argsort(order_ids)
        rank = sorter[torch.searchsorted(order_ids[sorter], ids)]  # output row of each step
        order = torch.argsort(rank, stable=True)  # stable: each episode's steps stay in time order
        return steps[order], torch.bincount(rank, minlength=len(episodes))

    @staticmethod
    def _members(group: CompletedGroup) -> list[int]:
        """The episodes of ``group`` in output order: the sampled members, then the greedy one (if any)."""
        return sorted(group.episodes) + ([] if group.greedy_episode is None else [group.greedy_episode])

    def _emit(self, groups: list[CompletedGroup], taken: tuple[TensorDictBase, torch.Tensor] | None = None) -> TensorDictBase:
        episodes = [e for g in groups for e in self._members(g)]
        steps, ids = self._take(episodes) if taken is None else taken
        ordered, lengths = self._order(steps, ids, episodes)
        if self.traj_format == "cat":
            batch = ordered
        else:
            batch = pad_sequence(list(ordered.split(lengths.tolist())), pad_dim=0)
            batch.set(self.mask_key, torch.arange(batch.shape[1]).unsqueeze(0) < lengths.unsqueeze(1))
        self.last_max_lag = max(g.lag for g in groups)
        return batch

    def _informative(self, groups: list[CompletedGroup]) -> None:
        """Take the steps of ``groups`` out: keep the informative groups in :attr:`_ready`, drop the others (DAPO)."""
        episodes = [e for g in groups for e in self._members(g)]
        steps, ids = self._take(episodes)
        ordered, lengths = self._order(steps, ids, episodes)
        reward = ordered.get(self.reward_key, default=None)
        if reward is None:
            raise KeyError(
                f"GroupBatcher(dynamic_sampling=...): no reward {self.reward_key!r} in the collected data: name it with "
                "reward_key=..."
            )
        ends = torch.cumsum(lengths, 0)
        done = torch.zeros(int(ends[-1]), dtype=torch.bool)
        done[ends - 1] = True
        returns = episode_returns(reward.reshape(-1), done, gamma=self.gamma)
        sampled = torch.tensor([e != g.greedy_episode for g in groups for e in self._members(g)])
        group_of = torch.tensor([g.group for g in groups for _ in g.episodes], dtype=torch.int64)
        keep, dropped = informative_groups(
            returns[sampled], group_of, self.keep_return_bounds, drop_zero_spread=self.dynamic_sampling
        )  # the sampled members decide (the greedy one is the baseline, not a member)
        self.groups_dropped_uninformative += dropped
        sizes = torch.tensor([len(g.episodes) for g in groups])
        first = torch.cumsum(sizes, 0) - sizes  # each group's first episode
        kept = [g for g, k in zip(groups, keep[first].tolist(), strict=True) if k]
        self._uninformative_streak = 0 if kept else self._uninformative_streak + dropped
        self._check_starvation()
        if kept:
            kept_ids = torch.tensor([e for g in kept for e in self._members(g)], dtype=ids.dtype)
            in_kept = torch.isin(ids, kept_ids)
            self._ready += kept
            self._ready_steps.append((steps[in_kept], ids[in_kept]))

    def _check_starvation(self) -> None:
        """Dynamic sampling on a task without signal would collect forever: warn after 100 uninformative groups in a
        row, raise after ``max_uninformative_groups``."""
        streak = self._uninformative_streak
        detail = f"{streak} groups in a row"
        self.signal_monitor.observe("all_filtered", streak >= min(100, self.max_uninformative_groups or 100), True, detail)
        if self.max_uninformative_groups is not None and streak >= self.max_uninformative_groups:
            what, fix = NO_SIGNAL_CAUSES["all_filtered"]
            raise RuntimeError(
                f"GroupBatcher: {what.format(detail=detail)}. Fix: {fix} (or raise max_uninformative_groups, None: no bound)."
            )

    def _next_groups(self) -> tuple[list[CompletedGroup], tuple[TensorDictBase, torch.Tensor] | None] | None:
        """The groups of the next batch (and their steps when already taken out), or ``None`` when not enough."""
        n = self.groups_per_batch
        if not self._filters:  # all or none; stale groups met on the way are dropped
            groups = self._harvest.pop_complete(n, min_groups=n)
            self._discard()
            return (groups, None) if groups else None
        # DAPO: take the complete groups out one batch's worth at a time, drop the uninformative ones, keep the
        # others until n are there (no yield, so no policy version, happens between a group's harvest and its batch)
        while len(self._ready) < n:
            groups = self._harvest.pop_complete(n - len(self._ready))
            self._discard()
            if not groups:
                return None
            self._informative(groups)
        groups, self._ready = self._ready, []
        parts, self._ready_steps = self._ready_steps, []
        steps = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        ids = torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        return groups, (steps, ids)

    def __iter__(self) -> Iterator[TensorDictBase]:
        yielded = False
        for batch in self.collector:
            if batch is None:
                continue
            self.add(batch)
            while True:
                popped = self._next_groups()
                if popped is None:
                    break
                yielded = True
                yield self._emit(*popped)
                if self.auto_version:
                    self.new_policy_version()
        if self._filters and not yielded and self.groups_dropped_uninformative:  # the collector ran out: say why
            detail = f"all {self.groups_dropped_uninformative} complete groups; no batch was yielded"
            self.signal_monitor.observe("all_filtered", True, immediate=True, detail=detail)


def _grouped_env_of(collector) -> GroupedEnv | None:
    """The :class:`GroupedEnv` under ``collector.env`` (``None`` when not reachable, e.g. in worker processes)."""
    env = collector_env(collector)
    while isinstance(env, EnvBase):
        if isinstance(env, GroupedEnv):
            return env
        if not isinstance(env, TransformedEnv):
            break
        env = env.base_env
    if isinstance(env, EnvBase):
        warnings.warn(
            f"GroupBatcher: the collector's env ({type(env).__name__}) is not a GroupedEnv, so its steps may carry no "
            "group labels: build it on GroupedEnv(env, group_size).",
            stacklevel=3,
        )
    return None
