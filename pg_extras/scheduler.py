"""The group scheduler: which env slot plays which member of which group, from which reset seed.

GRPO's "query" for a control task is an initial state: a *group* is ``group_size`` episodes that start from the
same reset seed (docs/maths.md#9-the-group-scheduler). :class:`GroupScheduler` hands out *jobs*
``(episode, group, member, seed)`` to env slots as they become free, for any number of slots ``N >= 1`` and any
group size ``G >= 2``; ``N`` need not be a multiple of ``G`` and no slot ever waits for another slot's episode
(``lockstep=True`` keeps the older schedule: all slots start a round together and a slot that finished waits).

* Members of the oldest open group are handed out first (FIFO), so a group's members start as close together as
  the slots allow; a new group (fresh seed) is opened only when every open group has all its members assigned.
* A group is *complete* when all ``G`` members have finished. Members may be collected under different policy
  versions: the loss uses the behaviour log-probs stored at collection time, so PPO-clip / TRPO ratios stay correct.
  The *lag* of a group is ``policy_version - version at which its first member was handed out``; complete groups
  whose lag exceeds ``max_policy_lag`` are dropped (and counted) by :meth:`GroupScheduler.pop_complete`.
* ``greedy_member=True`` (ReMax, docs/maths.md#remax): every group gets one extra member, played with the policy's
  deterministic action from the same seed; its job has ``greedy=True`` and member index ``G``. Its return is the
  group's baseline (:attr:`CompletedGroup.greedy_return`, passed to :meth:`GroupScheduler.finish`); it is not one of
  the group's training episodes (:attr:`CompletedGroup.episodes` lists the ``G`` sampled ones).
* An episode that cannot be completed (the env was reset under it, a rollout was interrupted) is *abandoned*: its
  group is dropped, the members still running are discarded when they end, the unassigned ones are never handed out.

The completion, lag and staleness bookkeeping is :class:`GroupHarvest`'s. The scheduler drives one itself; a
consumer that only sees the episodes' labels (the scheduler lives in another process, e.g. a collector worker)
drives its own from the labelled steps: :meth:`GroupHarvest.start` at an episode's first step, :meth:`~GroupHarvest.end`
at its last one, and :meth:`~GroupHarvest.pop_dead` to drop the groups whose missing members were lost.

The scheduler is pure Python (no framework import): the SB3 and TorchRL adapters drive the same object.

Example::

    >>> sched = GroupScheduler(num_slots=3, group_size=2, seed=0)
    >>> jobs = [sched.assign(slot) for slot in range(3)]
    >>> [(j.group, j.member) for j in jobs]  # slot 2 opens a second group
    [(0, 0), (0, 1), (1, 0)]
    >>> jobs[0].seed == jobs[1].seed != jobs[2].seed
    True
    >>> sched.finish(jobs[0].episode), sched.finish(jobs[1].episode)
    (False, True)
    >>> [g.group for g in sched.pop_complete()]
    [0]
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from pg_extras.validation import check_bool, check_choice

__all__ = ["CompletedGroup", "GroupHarvest", "GroupJob", "GroupScheduler"]

_SEED_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class GroupJob:
    """One episode to play: member ``member`` of group ``group``, reset from ``seed``."""

    episode: int  # unique id of the episode
    group: int  # unique id of the group
    member: int  # index of the member in its group, 0 .. G-1 (G: the greedy member)
    seed: int  # reset seed, the same for every member of the group
    version: int  # policy version when the job was handed out
    greedy: bool = False  # ReMax's greedy member: act with the deterministic action, do not train on it


@dataclass
class CompletedGroup:
    """A group whose ``G`` members have all finished."""

    group: int
    seed: int | None  # the group's reset seed (None when the harvest was not told it)
    episodes: list[int]  # episode ids of the sampled members, in the order they started
    first_version: int  # policy version when the first member was handed out (its first step seen)
    lag: int = 0  # policy versions between the first hand-out and the harvest (set by pop_complete)
    greedy_episode: int | None = None  # the greedy member's episode id (greedy_member=True)
    greedy_return: float | None = None  # its return, when it was given to end() / finish()


def _check_group_size(group_size: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2 (a group compares at least two episodes), got {group_size!r}.")
    return group_size


def _check_max_policy_lag(max_policy_lag: int | None) -> int | None:
    if max_policy_lag is not None and (
        isinstance(max_policy_lag, bool) or not isinstance(max_policy_lag, int) or max_policy_lag < 0
    ):
        raise ValueError(f"max_policy_lag must be an integer >= 0 or None (no bound), got {max_policy_lag!r}.")
    return max_policy_lag


@dataclass
class _Pending:
    group: int
    seed: int | None
    first_version: int
    episodes: list[int] = field(default_factory=list)  # started members, in start order
    finished: list[int] = field(default_factory=list)  # members that ended, in end order
    greedy_episode: int | None = None
    greedy_return: float | None = None


class GroupHarvest:
    """Complete groups from episode starts and ends: completion, lag, staleness bound, dropped and dead groups.

    The bookkeeping half of the group engine, for whoever sees the episodes: :class:`GroupScheduler` drives one (its
    hand-outs and endings), and a consumer that only sees labelled steps (``group_id`` / ``episode_id``, the scheduler
    being out of reach in a worker process) drives its own, e.g. TorchRL's ``GroupBatcher``.

    * :meth:`start` (first step of an episode seen) stamps its group with :attr:`policy_version` when the group is new;
      a group that gets more than ``group_size`` members raises ``ValueError`` (a wrong ``group_size``, or two
      schedulers sharing an id namespace).
    * :meth:`end` (last step seen): the group is *complete* when its ``group_size`` members ended.
    * :meth:`pop_complete` returns complete groups oldest first with their ``lag`` (``policy_version -
      first_version``); those over ``max_policy_lag`` are dropped, counted in :attr:`groups_dropped_stale` and their
      episodes reported by :meth:`pop_discarded`.
    * :meth:`abandon` / :meth:`drop`: a group that can no longer complete is dropped (:attr:`groups_abandoned`): its
      ended members are discarded at once, its running ones when they end (or are abandoned).
    * :meth:`pop_dead`: a scheduler hands out every member of a group before the first member of the next one, so a
      group with fewer than ``group_size`` members whose id namespace has started a later group lost its other
      members (a full env reset): it is dropped as abandoned. When every group dies at the same size and none ever
      completed, ``group_size`` is wrong and this raises ``ValueError``.

    :param group_size: episodes per group ``G >= 2``, the labelling scheduler's.
    :param max_policy_lag: drop complete groups whose lag exceeds this many policy versions (``None``: no bound).
    :param namespace: size of the id namespaces: ``id // namespace`` says which scheduler labelled an id (give
        scheduler ``k`` the ``id_offset`` ``k * namespace``); dead groups are found per namespace. ``None``: one
        namespace (one scheduler).
    :param greedy_member: each group has one more member, the greedy one (ReMax): it is started with
        ``start(..., greedy=True)``, and a group completes when its ``group_size`` sampled members and it have ended.
    :param name: the owner named in error messages.

    Example::

        >>> harvest = GroupHarvest(group_size=2, max_policy_lag=1)
        >>> harvest.start(0, group=0)
        >>> harvest.start(1, group=0)
        >>> harvest.end(0), harvest.end(1)
        (False, True)
        >>> harvest.new_policy_version()
        1
        >>> [(g.group, g.episodes, g.lag) for g in harvest.pop_complete()]
        [(0, [0, 1], 1)]
    """

    def __init__(
        self,
        group_size: int,
        max_policy_lag: int | None = None,
        namespace: int | None = None,
        *,
        greedy_member: bool = False,
        name: str = "GroupHarvest",
    ) -> None:
        check_bool("greedy_member", greedy_member)
        if namespace is not None and (isinstance(namespace, bool) or not isinstance(namespace, int) or namespace < 1):
            raise ValueError(f"namespace must be an integer >= 1 or None (one namespace), got {namespace!r}.")
        self.group_size = _check_group_size(group_size)
        self.max_policy_lag = _check_max_policy_lag(max_policy_lag)
        self.namespace = namespace
        self.greedy_member = bool(greedy_member)
        self.members = self.group_size + int(self.greedy_member)  # episodes started per group
        self.name = name
        self.policy_version = 0
        self._pending: dict[int, _Pending] = {}  # groups not complete yet, by start order
        self._complete: deque[CompletedGroup] = deque()  # complete groups not harvested yet, oldest first
        self._complete_ids: set[int] = set()
        self._member: dict[int, int] = {}  # episode -> group, for the members of pending and complete groups
        self._dropped_running: set[int] = set()  # started, not ended members of dropped groups
        self._discarded: list[int] = []  # ended episodes whose data must be thrown away
        self._latest: dict[int, int] = {}  # namespace -> latest group id started
        self._dead_sizes: set[int] = set()  # member counts of the dead groups, while no group has completed
        self._dead_count = 0
        # counters (cumulative): what happened to the groups
        self.groups_completed = 0
        self.groups_dropped_stale = 0
        self.groups_abandoned = 0

    # ------------------------------------------------------------------ episodes
    def start(self, episode: int, group: int, seed: int | None = None, greedy: bool = False) -> None:
        """The first step of ``episode``, a member of ``group`` (reset from ``seed``, if known), was seen.

        ``greedy``: it is the group's greedy member (``greedy_member=True`` only; one per group).
        """
        if episode in self._member or episode in self._dropped_running:
            raise ValueError(f"{self.name}: episode {episode} started twice (episode ids must be unique).")
        pending = self._pending.get(group)
        if pending is None:
            if group in self._complete_ids:
                self._too_many(group)
            pending = self._pending[group] = _Pending(group, seed, self.policy_version)
            ns = self._namespace_of(group)
            self._latest[ns] = max(group, self._latest.get(ns, group))
        elif len(pending.episodes) == self.members:
            self._too_many(group)
        if greedy:
            if not self.greedy_member:
                raise ValueError(f"{self.name}: a greedy member was started but greedy_member=False.")
            if pending.greedy_episode is not None:
                raise ValueError(f"{self.name}: group {group} got a second greedy member (episode {episode}).")
            pending.greedy_episode = episode
        elif self.greedy_member and len(pending.episodes) - int(pending.greedy_episode is not None) == self.group_size:
            self._too_many(group)
        pending.episodes.append(episode)
        self._member[episode] = group

    def _too_many(self, group: int) -> None:
        raise ValueError(
            f"{self.name}(group_size={self.group_size}): group {group} has more members than that: pass the group_size "
            "of the env (scheduler) that labels the episodes, and give each scheduler (collector worker) its own "
            "id_offset."
        )

    def _namespace_of(self, group: int) -> int:
        return 0 if self.namespace is None else group // self.namespace

    def end(self, episode: int, greedy_return: float | None = None) -> bool:
        """The last step of ``episode`` was seen. Returns True when this completes its group.

        ``greedy_return``: the return of the group's greedy member, when ``episode`` is it (kept in the group).
        """
        if episode in self._dropped_running:
            self._dropped_running.discard(episode)
            self._discarded.append(episode)
            return False
        pending = self._pending.get(self._member.get(episode, None))
        if pending is None or episode in pending.finished:
            raise KeyError(f"episode {episode} is not a running episode of this {self.name} (not started, or ended twice?)")
        pending.finished.append(episode)
        if episode == pending.greedy_episode and greedy_return is not None:
            pending.greedy_return = float(greedy_return)
        if len(pending.finished) < self.members:
            return False
        del self._pending[pending.group]
        sampled = [e for e in pending.episodes if e != pending.greedy_episode]
        self._complete.append(
            CompletedGroup(
                pending.group,
                pending.seed,
                sampled,
                pending.first_version,
                greedy_episode=pending.greedy_episode,
                greedy_return=pending.greedy_return,
            )
        )
        self._complete_ids.add(pending.group)
        return True

    def tracks(self, episode: int) -> bool:
        """Whether ``episode`` started and its group is neither harvested nor dropped."""
        return episode in self._member

    def is_dropped(self, episode: int) -> bool:
        """Whether ``episode`` is a running member of a dropped group (its data will be discarded when it ends)."""
        return episode in self._dropped_running

    @property
    def dropped_running(self) -> frozenset[int]:
        """The running members of dropped groups (their further steps are to be thrown away)."""
        return frozenset(self._dropped_running)

    # ------------------------------------------------------------------ dropped groups
    def abandon(self, episode: int) -> None:
        """The running ``episode`` cannot be completed: drop its group; it is discarded. No-op once it ended."""
        if episode in self._dropped_running:
            self._dropped_running.discard(episode)
            self._discarded.append(episode)
            return
        pending = self._pending.get(self._member.get(episode, None))
        if pending is None or episode in pending.finished:
            return
        self._discarded.append(episode)
        self._drop(pending, running=episode)

    def drop(self, group: int) -> bool:
        """``group`` can no longer complete (its missing members will never play). Returns False if not pending."""
        pending = self._pending.get(group)
        if pending is None:
            return False
        self._drop(pending)
        return True

    def _drop(self, pending: _Pending, running: int | None = None) -> None:
        del self._pending[pending.group]
        self.groups_abandoned += 1
        self._discarded.extend(pending.finished)
        for episode in pending.episodes:
            del self._member[episode]
            if episode != running and episode not in pending.finished:
                self._dropped_running.add(episode)

    def pop_dead(self) -> dict[int, list[int]]:
        """Drop the groups that can never complete (see the class docstring); returns their started members.

        Their ended members are reported by :meth:`pop_discarded`, their running ones when they end or are abandoned.
        """
        dead = {}
        for pending in list(self._pending.values()):
            if len(pending.episodes) < self.members and pending.group < self._latest[self._namespace_of(pending.group)]:
                dead[pending.group] = list(pending.episodes)
                self._drop(pending)
        if self.groups_completed == 0:
            self._dead_sizes.update(len(episodes) for episodes in dead.values())
            self._dead_count += len(dead)
            if not self._complete and self._dead_count >= 2 and len(self._dead_sizes) == 1:
                (size,) = self._dead_sizes
                raise ValueError(
                    f"{self.name}(group_size={self.group_size}): the groups end after {size} members, so no group ever "
                    f"fills: pass the group_size of the env (scheduler) that labels the episodes ({size}?), and do not "
                    "reset the envs between batches (e.g. a collector's reset_at_each_iter=False)."
                )
        return dead

    # ------------------------------------------------------------------ harvest
    def new_policy_version(self) -> int:
        """Call after each policy update; returns the new version number."""
        self.policy_version += 1
        return self.policy_version

    def pop_complete(self, max_groups: int | None = None, *, min_groups: int = 1) -> list[CompletedGroup]:
        """Up to ``max_groups`` complete groups within the staleness bound, oldest first (``lag`` set).

        Stale groups met on the way are dropped, counted and their episodes discarded. Fewer than ``min_groups``
        fresh groups: none is returned, they stay for the next call.
        """
        out: list[CompletedGroup] = []
        while self._complete and (max_groups is None or len(out) < max_groups):
            done = self._complete.popleft()
            done.lag = self.policy_version - done.first_version
            if self.max_policy_lag is not None and done.lag > self.max_policy_lag:
                self._forget(done)
                self.groups_dropped_stale += 1
                self._discarded.extend(done.episodes)
                if done.greedy_episode is not None:
                    self._discarded.append(done.greedy_episode)
                continue
            out.append(done)
        if len(out) < min_groups:
            self._complete.extendleft(reversed(out))
            return []
        for done in out:
            self._forget(done)
        self.groups_completed += len(out)
        return out

    def _forget(self, done: CompletedGroup) -> None:
        self._complete_ids.discard(done.group)
        for episode in done.episodes:
            del self._member[episode]
        if done.greedy_episode is not None:
            del self._member[done.greedy_episode]

    def pop_discarded(self) -> list[int]:
        """Ended episodes whose data must be thrown away (members of dropped or stale groups), since the last call."""
        out, self._discarded = self._discarded, []
        return out

    @property
    def num_pending(self) -> int:
        """Groups started and not complete yet."""
        return len(self._pending)


@dataclass
class _Open:
    group: int
    seed: int
    handed_out: int = 0  # members handed out
    dropped: bool = False


class GroupScheduler:
    """Hands out group members to env slots as they become free (see the module docstring).

    :param num_slots: number of env slots ``N >= 1`` (sub-envs of a vectorised env).
    :param group_size: episodes per group ``G >= 2``.
    :param seed: seed of the generator that draws the groups' reset seeds (``None``: from the OS).
    :param schedule: ``"async"`` (default: a free slot takes the next member at once) or ``"lockstep"`` (rounds:
        every slot gets a job, then no slot gets another one until every job of the round has ended).
    :param max_policy_lag: drop complete groups whose lag exceeds this many policy versions (``None``: no bound).
    :param id_offset: added to every episode and group id, so that the ids of several schedulers (one per collector
        worker) never collide: give worker ``k`` the offset ``k * 2**40``.
    :param greedy_member: add one greedy member per group (ReMax; see the module docstring): member ``G``, handed out
        after the ``G`` sampled ones, with ``GroupJob.greedy`` True.
    """

    def __init__(
        self,
        num_slots: int,
        group_size: int,
        *,
        seed: int | None = None,
        schedule: str = "async",
        max_policy_lag: int | None = None,
        id_offset: int = 0,
        greedy_member: bool = False,
    ) -> None:
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be an integer >= 1 (the number of envs), got {num_slots!r}.")
        _check_group_size(group_size)
        check_choice("schedule", schedule, ("async", "lockstep"))
        _check_max_policy_lag(max_policy_lag)
        self.num_slots = num_slots
        self.group_size = group_size
        self.schedule = schedule
        self.id_offset = int(id_offset)
        self._harvest = GroupHarvest(group_size, max_policy_lag, greedy_member=greedy_member, name="GroupScheduler")
        self.greedy_member = self._harvest.greedy_member
        self._rng = random.Random(seed)
        self._next_episode = 0
        self._next_group = 0
        self._open: deque[_Open] = deque()  # groups with members not yet handed out
        self._jobs: dict[int, GroupJob] = {}  # running (handed out, not ended) episodes
        self._round_slots: set[int] = set()

    # the harvest's state, under the scheduler's names
    @property
    def policy_version(self) -> int:
        return self._harvest.policy_version

    @property
    def max_policy_lag(self) -> int | None:
        return self._harvest.max_policy_lag

    @max_policy_lag.setter
    def max_policy_lag(self, value: int | None) -> None:
        self._harvest.max_policy_lag = _check_max_policy_lag(value)

    @property
    def groups_completed(self) -> int:
        return self._harvest.groups_completed

    @property
    def groups_dropped_stale(self) -> int:
        return self._harvest.groups_dropped_stale

    @property
    def groups_abandoned(self) -> int:
        return self._harvest.groups_abandoned

    # ------------------------------------------------------------------ hand-out
    def seed(self, seed: int | None) -> None:
        """Re-seed the generator of the groups' reset seeds."""
        self._rng = random.Random(seed)

    def assign(self, slot: int) -> GroupJob | None:
        """The next job for a free ``slot``; ``None`` only with ``schedule="lockstep"`` while the round is running."""
        if not 0 <= slot < self.num_slots:
            raise ValueError(f"slot must be in [0, {self.num_slots}), got {slot}.")
        if self.schedule == "lockstep":
            if slot in self._round_slots:
                if self._jobs:
                    return None
                self._round_slots.clear()  # every job of the round has ended: a new round starts
            self._round_slots.add(slot)
        while self._open and self._open[0].dropped:
            self._open.popleft()
        if not self._open:
            self._open.append(_Open(self.id_offset + self._next_group, self._rng.randrange(_SEED_LIMIT)))
            self._next_group += 1
        group = self._open[0]
        greedy = group.handed_out == self.group_size  # only reached with greedy_member: member G
        job = GroupJob(
            self.id_offset + self._next_episode, group.group, group.handed_out, group.seed, self.policy_version, greedy
        )
        self._next_episode += 1
        group.handed_out += 1
        if group.handed_out == self._harvest.members:
            self._open.popleft()
        self._harvest.start(job.episode, job.group, job.seed, greedy=greedy)
        self._jobs[job.episode] = job
        return job

    # ------------------------------------------------------------------ endings
    def job(self, episode: int) -> GroupJob:
        """The running job of ``episode``."""
        try:
            return self._jobs[episode]
        except KeyError:
            raise KeyError(f"episode {episode} is not a running job of this scheduler") from None

    def is_dropped(self, episode: int) -> bool:
        """Whether the group of the running ``episode`` was dropped (its data will never be used)."""
        self.job(episode)
        return self._harvest.is_dropped(episode)

    def finish(self, episode: int, greedy_return: float | None = None) -> bool:
        """``episode`` ended (terminated or truncated). Returns True when this completes its group.

        ``greedy_return``: the return of a greedy job (``greedy_member=True``), kept as its group's baseline
        (``CompletedGroup.greedy_return``; ``None`` when the consumer computes it from the episode's steps itself).
        """
        job = self._jobs.pop(episode, None)
        if job is None:
            raise KeyError(f"episode {episode} is not a running job of this scheduler (finished twice?)")
        return self._harvest.end(episode, greedy_return if job.greedy else None)

    def abandon(self, episode: int) -> None:
        """``episode`` cannot be completed (its env was reset or its steps were lost): drop its whole group."""
        job = self._jobs.pop(episode, None)
        if job is None:
            return
        self._harvest.abandon(episode)
        for group in self._open:
            if group.group == job.group:
                group.dropped = True  # its members not handed out yet never will be

    def abandon_all(self) -> None:
        """Every running episode is lost (e.g. a full env reset): drop their groups and every open group."""
        for episode in list(self._jobs):
            self.abandon(episode)
        open_groups = list(self._open)
        self._open.clear()
        for group in open_groups:
            self._harvest.drop(group.group)
        self._round_slots.clear()

    # ------------------------------------------------------------------ harvest
    def new_policy_version(self) -> int:
        """Call after each policy update; returns the new version number."""
        return self._harvest.new_policy_version()

    def pop_complete(self) -> list[CompletedGroup]:
        """Complete groups within the staleness bound, oldest first; stale ones are dropped and counted."""
        return self._harvest.pop_complete()

    def pop_discarded(self) -> list[int]:
        """Ended episodes whose data must be thrown away (members of dropped or stale groups), since the last call."""
        return self._harvest.pop_discarded()

    @property
    def num_running(self) -> int:
        """Episodes handed out and not yet ended."""
        return len(self._jobs)
