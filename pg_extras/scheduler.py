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
* An episode that cannot be completed (the env was reset under it, a rollout was interrupted) is *abandoned*: its
  group is dropped, the members still running are discarded when they end, the unassigned ones are never handed out.

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

from pg_extras._checks import check_choice

__all__ = ["CompletedGroup", "GroupJob", "GroupScheduler"]

_SEED_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class GroupJob:
    """One episode to play: member ``member`` of group ``group``, reset from ``seed``."""

    episode: int  # unique id of the episode
    group: int  # unique id of the group
    member: int  # index of the member in its group, 0 .. G-1
    seed: int  # reset seed, the same for every member of the group
    version: int  # policy version when the job was handed out


@dataclass
class CompletedGroup:
    """A group whose ``G`` members have all finished."""

    group: int
    seed: int
    episodes: list[int]  # episode ids, by member
    first_version: int  # policy version when the first member was handed out
    lag: int = 0  # policy versions between the first hand-out and the harvest (set by pop_complete)


@dataclass
class _Group:
    group: int
    seed: int
    first_version: int
    episodes: list[int] = field(default_factory=list)  # handed-out members, by member index
    finished: list[int] = field(default_factory=list)  # members that ended
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
    ) -> None:
        if isinstance(num_slots, bool) or not isinstance(num_slots, int) or num_slots < 1:
            raise ValueError(f"num_slots must be an integer >= 1 (the number of envs), got {num_slots!r}.")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
            raise ValueError(
                f"group_size must be an integer >= 2 (a group compares at least two episodes), got {group_size!r}."
            )
        check_choice("schedule", schedule, ("async", "lockstep"))
        if max_policy_lag is not None and (
            isinstance(max_policy_lag, bool) or not isinstance(max_policy_lag, int) or max_policy_lag < 0
        ):
            raise ValueError(f"max_policy_lag must be an integer >= 0 or None (no bound), got {max_policy_lag!r}.")
        self.num_slots = num_slots
        self.group_size = group_size
        self.schedule = schedule
        self.max_policy_lag = max_policy_lag
        self.id_offset = int(id_offset)
        self.policy_version = 0
        self._rng = random.Random(seed)
        self._next_episode = 0
        self._next_group = 0
        self._groups: dict[int, _Group] = {}
        self._open: deque[_Group] = deque()  # groups with members not yet handed out
        self._jobs: dict[int, GroupJob] = {}  # running (handed out, not ended) episodes
        self._complete: list[CompletedGroup] = []
        self._discarded: list[int] = []  # ended episodes whose data must be thrown away
        self._round_slots: set[int] = set()
        # counters (cumulative): what happened to the groups
        self.groups_completed = 0
        self.groups_dropped_stale = 0
        self.groups_abandoned = 0

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
            self._forget_if_done(self._open.popleft())
        if not self._open:
            group = _Group(self.id_offset + self._next_group, self._rng.randrange(_SEED_LIMIT), self.policy_version)
            self._next_group += 1
            self._groups[group.group] = group
            self._open.append(group)
        group = self._open[0]
        job = GroupJob(self.id_offset + self._next_episode, group.group, len(group.episodes), group.seed, self.policy_version)
        self._next_episode += 1
        group.episodes.append(job.episode)
        if len(group.episodes) == self.group_size:
            self._open.popleft()
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
        return self._groups[self.job(episode).group].dropped

    def finish(self, episode: int) -> bool:
        """``episode`` ended (terminated or truncated). Returns True when this completes its group."""
        job = self._jobs.pop(episode, None)
        if job is None:
            raise KeyError(f"episode {episode} is not a running job of this scheduler (finished twice?)")
        group = self._groups[job.group]
        if group.dropped:
            self._discarded.append(episode)
            self._forget_if_done(group)
            return False
        group.finished.append(episode)
        if len(group.finished) < self.group_size:
            return False
        del self._groups[group.group]
        self._complete.append(CompletedGroup(group.group, group.seed, list(group.episodes), group.first_version))
        return True

    def abandon(self, episode: int) -> None:
        """``episode`` cannot be completed (its env was reset or its steps were lost): drop its whole group."""
        job = self._jobs.pop(episode, None)
        if job is None:
            return
        self._discarded.append(episode)
        self._drop(self._groups[job.group])

    def _drop(self, group: _Group) -> None:
        if not group.dropped:
            group.dropped = True
            self.groups_abandoned += 1
            self._discarded.extend(group.finished)
        self._forget_if_done(group)

    def abandon_all(self) -> None:
        """Every running episode is lost (e.g. a full env reset): drop their groups and every open group."""
        for episode in list(self._jobs):
            self.abandon(episode)
        open_groups = list(self._open)
        self._open.clear()
        for group in open_groups:
            self._drop(group)
        self._round_slots.clear()

    def _forget_if_done(self, group: _Group) -> None:
        running = any(self._jobs.get(e) is not None for e in group.episodes)
        if group.dropped and not running and group not in self._open:
            self._groups.pop(group.group, None)

    # ------------------------------------------------------------------ harvest
    def new_policy_version(self) -> int:
        """Call after each policy update; returns the new version number."""
        self.policy_version += 1
        return self.policy_version

    def pop_complete(self) -> list[CompletedGroup]:
        """Complete groups within the staleness bound, oldest first; stale ones are dropped and counted."""
        out = []
        for done in self._complete:
            done.lag = self.policy_version - done.first_version
            if self.max_policy_lag is not None and done.lag > self.max_policy_lag:
                self.groups_dropped_stale += 1
                self._discarded.extend(done.episodes)
                continue
            out.append(done)
        self._complete = []
        self.groups_completed += len(out)
        return out

    def pop_discarded(self) -> list[int]:
        """Ended episodes whose data must be thrown away (members of dropped or stale groups), since the last call."""
        out, self._discarded = self._discarded, []
        return out

    @property
    def num_running(self) -> int:
        """Episodes handed out and not yet ended."""
        return len(self._jobs)
