"""GroupScheduler: seeds, completeness, FIFO hand-out, any N and G, lockstep rounds, staleness bound, abandonment;
GroupHarvest: completion, lag, stale / dropped / dead groups, wrong group sizes, id namespaces."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pg_extras import GroupHarvest, GroupScheduler


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


# ---------------------------------------------------------------------------------------------- GroupHarvest


def play(harvest, group, episodes, end=True):
    for e in episodes:
        harvest.start(e, group)
    if end:
        return [harvest.end(e) for e in episodes]
    return None


def test_harvest_completes_groups_when_all_members_ended():
    h = GroupHarvest(3)
    for e in (0, 1, 2):
        h.start(e, 0, seed=7)
    h.start(3, 1)
    assert [h.end(e) for e in (2, 0)] == [False, False] and h.pop_complete() == []
    assert h.end(1) is True and h.num_pending == 1
    (done,) = h.pop_complete()
    assert (done.group, done.seed, done.episodes, done.first_version, done.lag) == (0, 7, [0, 1, 2], 0, 0)
    assert h.groups_completed == 1 and not h.tracks(0) and h.tracks(3)
    with pytest.raises(KeyError, match="not a running episode"):
        h.end(0)  # harvested
    with pytest.raises(KeyError, match="not a running episode"):
        h.end(99)  # never started
    with pytest.raises(ValueError, match="started twice"):
        h.start(3, 1)


def test_harvest_lag_and_stale_drop():
    h = GroupHarvest(2, max_policy_lag=1)
    play(h, 0, [0, 1], end=False)  # group 0 starts at version 0
    h.new_policy_version()
    play(h, 1, [2, 3])  # group 1 starts at version 1, ends at once
    h.new_policy_version()
    assert h.end(0) is False and h.end(1) is True  # group 0 completes at version 2: lag 2 > 1
    groups = h.pop_complete()
    assert [(g.group, g.lag) for g in groups] == [(1, 1)]
    assert h.groups_dropped_stale == 1 and h.groups_completed == 1 and sorted(h.pop_discarded()) == [0, 1]
    assert h.pop_discarded() == []
    unbounded = GroupHarvest(2)
    play(unbounded, 0, [0, 1], end=False)
    for _ in range(5):
        unbounded.new_policy_version()
    unbounded.end(0), unbounded.end(1)
    assert [g.lag for g in unbounded.pop_complete()] == [5] and unbounded.policy_version == 5


def test_harvest_max_and_min_groups_keep_the_rest_for_later():
    h = GroupHarvest(2)
    for g in range(3):
        play(h, g, [2 * g, 2 * g + 1])
    assert h.pop_complete(4, min_groups=4) == []  # not enough: all stay
    assert [g.group for g in h.pop_complete(2, min_groups=2)] == [0, 1]
    with pytest.raises(ValueError, match="more members"):
        h.start(99, 2)  # group 2 is complete (not harvested yet): a third member means a wrong group_size
    assert [g.group for g in h.pop_complete()] == [2] and h.groups_completed == 3


def test_harvest_abandon_and_drop():
    h = GroupHarvest(3)
    play(h, 0, [0, 1, 2], end=False)
    h.end(0)
    h.abandon(1)  # drops group 0: member 0 (ended) and 1 discarded now, 2 when it ends
    assert h.groups_abandoned == 1 and h.pop_discarded() == [1, 0]
    assert h.is_dropped(2) and h.dropped_running == {2} and not h.tracks(2)
    assert h.end(2) is False and h.pop_discarded() == [2] and not h.dropped_running
    h.abandon(12345)  # unknown: no-op
    play(h, 1, [3], end=False)
    assert h.drop(1) and not h.drop(1) and h.groups_abandoned == 2
    h.abandon(3)  # a running member of a dropped group that will never end
    assert h.pop_discarded() == [3] and h.num_pending == 0 and h.pop_complete() == []


def test_harvest_dead_groups_and_wrong_group_size():
    h = GroupHarvest(3)
    play(h, 0, [0, 1], end=False)  # its third member was lost (a full reset)...
    h.end(0)
    assert h.pop_dead() == {}  # ...which shows only once a later group starts
    play(h, 1, [2, 3, 4])
    assert h.pop_dead() == {0: [0, 1]} and h.groups_abandoned == 1 and h.pop_discarded() == [0]
    assert h.dropped_running == {1} and h.end(1) is False and h.pop_discarded() == [1]
    assert h.pop_dead() == {} and [g.group for g in h.pop_complete()] == [1]
    # every group dies at 2 members and none ever completed: group_size must be 2, not 4
    wrong = GroupHarvest(4, name="Consumer")
    for g in range(3):
        play(wrong, g, [2 * g, 2 * g + 1])
    with pytest.raises(ValueError, match=r"Consumer\(group_size=4\): the groups end after 2 members"):
        wrong.pop_dead()


def test_harvest_too_many_members_and_bad_arguments():
    h = GroupHarvest(2)
    play(h, 0, [0, 1], end=False)
    with pytest.raises(ValueError, match=r"GroupHarvest\(group_size=2\): group 0 has more members"):
        h.start(2, 0)
    for kwargs, match in [
        (dict(group_size=1), "group_size"),
        (dict(group_size=2, max_policy_lag=-1), "max_policy_lag"),
        (dict(group_size=2, namespace=0), "namespace"),
    ]:
        with pytest.raises(ValueError, match=match):
            GroupHarvest(**kwargs)


def test_harvest_dead_groups_are_found_per_namespace():
    ns = 2**40
    h = GroupHarvest(2, namespace=ns)
    play(h, 0, [0], end=False)  # worker 0, group 0: one member so far
    play(h, ns + 0, [ns + 0, ns + 1])  # worker 1 starts its groups 0 and 1: no news about worker 0
    play(h, ns + 1, [ns + 2], end=False)
    assert h.pop_dead() == {}
    play(h, 1, [2], end=False)  # worker 0 starts group 1: its group 0 lost a member
    assert h.pop_dead() == {0: [0]}
    h.start(ns + 3, ns + 1)
    assert h.end(ns + 2) is False and h.end(ns + 3) is True
    assert [g.group for g in h.pop_complete()] == [ns + 0, ns + 1]
    one = GroupHarvest(2)  # one namespace: worker 1's later groups would make worker 0's group look dead
    play(one, 0, [0], end=False)
    play(one, ns, [ns], end=False)
    assert one.pop_dead() == {0: [0]}


@settings(max_examples=25, deadline=None)
@given(
    num_slots=st.integers(1, 6),
    group_size=st.integers(2, 5),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=12),
    max_policy_lag=st.sampled_from([None, 0, 1, 3]),
)
def test_property_harvest_from_labels_matches_the_scheduler(num_slots, group_size, lengths, max_policy_lag):
    """A harvest that sees only each episode's (episode, group) label at its start and its end finds what the scheduler
    finds: the same complete groups with the same lags, the same stale drops."""
    sched = GroupScheduler(num_slots, group_size, seed=0, max_policy_lag=max_policy_lag)
    labels = GroupHarvest(group_size, max_policy_lag)
    running, counts, got, want = {}, [0] * num_slots, [], []
    for t in range(60):
        for slot in range(num_slots):
            if slot not in running:
                job = sched.assign(slot)
                labels.start(job.episode, job.group)
                running[slot] = [job, lengths[(slot + counts[slot]) % len(lengths)]]
                counts[slot] += 1
            running[slot][1] -= 1
            if running[slot][1] == 0:
                job = running.pop(slot)[0]
                assert sched.finish(job.episode) == labels.end(job.episode)
        if t % 3 == 2:
            want += [(g.group, g.episodes, g.lag) for g in sched.pop_complete()]
            got += [(g.group, g.episodes, g.lag) for g in labels.pop_complete()]
            assert sched.new_policy_version() == labels.new_policy_version()
            assert labels.pop_dead() == {}  # the scheduler never leaves a group short of members
    assert got == want and (want or sched.groups_dropped_stale)
    assert (labels.groups_completed, labels.groups_dropped_stale) == (sched.groups_completed, sched.groups_dropped_stale)
    assert sorted(labels.pop_discarded()) == sorted(sched.pop_discarded())


# -- ReMax's greedy member ---------------------------------------------------------------------------------------------


def test_greedy_member_is_one_extra_job_per_group_with_the_group_seed():
    sched = GroupScheduler(num_slots=2, group_size=2, seed=3, greedy_member=True)
    jobs = [sched.assign(0), sched.assign(1)]
    sched.finish(jobs[0].episode)
    jobs.append(sched.assign(0))  # the third member of group 0 is the greedy one
    assert [(j.group, j.member, j.greedy) for j in jobs] == [(0, 0, False), (0, 1, False), (0, 2, True)]
    assert len({j.seed for j in jobs}) == 1
    sched.finish(jobs[1].episode, greedy_return=3.0)  # ignored: not a greedy member
    assert sched.finish(jobs[2].episode, greedy_return=7.5)
    (done,) = sched.pop_complete()
    assert done.episodes == [jobs[0].episode, jobs[1].episode]  # the training episodes: the sampled members only
    assert done.greedy_episode == jobs[2].episode and done.greedy_return == 7.5


def test_greedy_member_of_a_stale_group_is_discarded_with_it():
    sched = GroupScheduler(num_slots=3, group_size=2, seed=0, max_policy_lag=0, greedy_member=True)
    jobs = [sched.assign(s) for s in range(3)]
    sched.new_policy_version()
    for j in jobs:
        sched.finish(j.episode, greedy_return=1.0 if j.greedy else None)
    assert sched.pop_complete() == []
    assert sorted(sched.pop_discarded()) == sorted(j.episode for j in jobs)


def test_harvest_rejects_a_greedy_member_it_was_not_told_about():
    harvest = GroupHarvest(group_size=2)
    with pytest.raises(ValueError, match="greedy_member=False"):
        harvest.start(0, group=0, greedy=True)
    harvest = GroupHarvest(group_size=2, greedy_member=True)
    harvest.start(0, group=0, greedy=True)
    with pytest.raises(ValueError, match="second greedy"):
        harvest.start(1, group=0, greedy=True)
