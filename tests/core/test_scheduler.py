"""GroupScheduler: seeds, completeness, FIFO hand-out, any N and G, lockstep rounds, staleness bound, abandonment."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pg_extras import GroupScheduler


def simulate(num_slots, group_size, lengths, steps, schedule="async", updates_every=None, max_policy_lag=None, seed=0):
    """Play `steps` time steps; slot i's k-th episode lasts lengths(i, k) steps. Returns (scheduler, log)."""
    sched = GroupScheduler(num_slots, group_size, seed=seed, schedule=schedule, max_policy_lag=max_policy_lag)
    running = {}  # slot -> (job, steps left)
    counts = [0] * num_slots
    busy_steps = 0
    log = {"jobs": [], "complete": [], "idle": 0}
    for t in range(steps):
        for slot in range(num_slots):
            if slot not in running:
                job = sched.assign(slot)
                if job is None:
                    log["idle"] += 1
                    continue
                log["jobs"].append((t, slot, job))
                running[slot] = (job, lengths(slot, counts[slot]))
                counts[slot] += 1
            busy_steps += 1
            job, left = running[slot]
            if left == 1:
                del running[slot]
                sched.finish(job.episode)
            else:
                running[slot] = (job, left - 1)
        if updates_every and (t + 1) % updates_every == 0:
            log["complete"] += sched.pop_complete()
            sched.new_policy_version()
    log["complete"] += sched.pop_complete()
    log["busy"] = busy_steps
    return sched, log


@pytest.mark.parametrize("num_slots,group_size", [(1, 2), (1, 8), (3, 8), (8, 8), (5, 2), (16, 4), (7, 3)])
def test_groups_are_complete_share_one_seed_and_no_slot_waits(num_slots, group_size):
    rng = random.Random(1)
    table = {}

    def lengths(slot, k):
        return table.setdefault((slot, k), rng.choice([1, 2, 5, 30]))  # very different episode lengths

    _sched, log = simulate(num_slots, group_size, lengths, 400)
    assert log["idle"] == 0 and log["busy"] == 400 * num_slots  # async: every slot busy every step
    jobs = {job.episode: job for _, _, job in log["jobs"]}
    assert log["complete"], "some group must complete"
    seeds = set()
    for done in log["complete"]:
        members = [jobs[e] for e in done.episodes]
        assert sorted(j.member for j in members) == list(range(group_size))
        assert {j.group for j in members} == {done.group}
        assert {j.seed for j in members} == {done.seed}
        seeds.add(done.seed)
    assert len(seeds) == len(log["complete"])  # one fresh seed per group
    # FIFO: the members of group k are all handed out before any member of group k + 1
    order = [job.group for _, _, job in log["jobs"]]
    assert order == sorted(order)


def test_same_seed_same_group_seeds_and_offsets_do_not_collide():
    a = [GroupScheduler(2, 2, seed=5).assign(0).seed for _ in range(2)]
    assert a[0] == a[1]
    s1, s2 = GroupScheduler(2, 2, seed=5, id_offset=0), GroupScheduler(2, 2, seed=6, id_offset=2**40)
    j1, j2 = s1.assign(0), s2.assign(0)
    assert j1.episode != j2.episode and j1.group != j2.group and j1.seed != j2.seed


def test_lockstep_rounds_wait_for_the_slowest_slot():
    def lengths(slot, k):
        return 1 if slot == 0 else 4

    _, log = simulate(2, 2, lengths, 8, schedule="lockstep")
    starts = [(t, slot) for t, slot, _ in log["jobs"]]
    assert starts == [(0, 0), (0, 1), (4, 0), (4, 1)]  # slot 0 waits 3 steps per round
    assert log["idle"] == 6


def test_staleness_bound_drops_and_counts_groups():
    def lengths(slot, k):
        return 10 if (slot, k) == (0, 0) else 1  # one member of group 0 takes 10 steps

    sched, log = simulate(2, 2, lengths, 12, updates_every=2, max_policy_lag=2)
    complete = {g.group for g in log["complete"]}
    assert 0 not in complete and sched.groups_dropped_stale >= 1  # group 0 spanned 5 updates
    dropped = set(sched.pop_discarded())
    jobs = [job for _, _, job in log["jobs"] if job.group == 0]
    assert {j.episode for j in jobs} <= dropped  # its episodes' data must be thrown away
    _, log = simulate(2, 2, lengths, 12, updates_every=2, max_policy_lag=None)
    assert 0 in {g.group for g in log["complete"]} and max(g.lag for g in log["complete"]) >= 4


def test_abandoned_episode_drops_its_group_and_pending_members():
    sched = GroupScheduler(1, 3, seed=0)
    first = sched.assign(0)
    assert not sched.finish(first.episode)
    second = sched.assign(0)
    sched.abandon(second.episode)
    assert sched.groups_abandoned == 1
    assert set(sched.pop_discarded()) == {first.episode, second.episode}
    nxt = sched.assign(0)
    assert nxt.group != first.group and nxt.member == 0  # the dropped group's third member is never handed out
    sched.abandon_all()
    assert sched.num_running == 0 and sched.pop_complete() == []


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_slots=0, group_size=2), "num_slots"),
        (dict(num_slots=2, group_size=1), "group_size"),
        (dict(num_slots=2, group_size=2, schedule="sync"), "schedule"),
        (dict(num_slots=2, group_size=2, max_policy_lag=-1), "max_policy_lag"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupScheduler(**kwargs)
    with pytest.raises(KeyError, match="not a running job"):
        GroupScheduler(1, 2).finish(123)


@settings(max_examples=25, deadline=None)
@given(
    num_slots=st.integers(1, 6),
    group_size=st.integers(2, 5),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=12),
)
def test_property_every_handed_out_member_is_accounted_for(num_slots, group_size, lengths):
    _sched, log = simulate(num_slots, group_size, lambda s, k: lengths[(s + k) % len(lengths)], 60)
    complete_eps = {e for g in log["complete"] for e in g.episodes}
    handed = {job.episode for _, _, job in log["jobs"]}
    assert complete_eps <= handed
    # what is neither complete nor running belongs to a group still being played
    assert len(complete_eps) == group_size * len(log["complete"])
