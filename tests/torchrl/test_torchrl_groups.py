"""GroupedEnv (GroupScheduler jobs, one seeded reset per episode) and GroupBatcher (whole groups, versions, env steps)."""

from __future__ import annotations

import functools
import multiprocessing as mp

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torchrl.collectors import Collector
from torchrl.envs import GymEnv, GymWrapper, ParallelEnv, SerialEnv, StepCounter, TransformedEnv

from torchrl_pg_extras import ID_NAMESPACE, GroupBatcher, GroupedEnv, GroupRelativeAdvantage

torch.set_num_threads(1)


class CountResets(gym.Wrapper):
    """Counts the resets of one gymnasium env (and the seeded ones)."""

    def __init__(self, env):
        super().__init__(env)
        self.resets, self.seeded = 0, 0

    def reset(self, *, seed=None, options=None):
        self.resets += 1
        self.seeded += seed is not None
        return self.env.reset(seed=seed, options=options)


class NeverEnds(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 2).astype("float32"), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 2).astype("float32"), 1.0, False, False, {}


def vec_env(n: int, mode=AutoresetMode.DISABLED, wrappers=()) -> GymWrapper:
    vec = gym.make_vec(
        "CartPole-v1",
        num_envs=n,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": mode},
        wrappers=list(wrappers),
    )
    return GymWrapper(vec, categorical_action_encoding=True)


def collector(env, frames: int = 64) -> Collector:
    return Collector(env, None, frames_per_batch=frames, total_frames=-1, auto_register_policy_transforms=False)


def check_groups(batch, group_size):
    """Rows come in groups of ``group_size`` members with one label and one start state; each row is a whole episode."""
    gid = batch["group_id"][:, 0, 0]
    first = batch["observation"][:, 0]
    mask = batch["collector", "mask"]
    assert batch.shape[0] % group_size == 0
    for g in range(batch.shape[0] // group_size):
        rows = slice(g * group_size, (g + 1) * group_size)
        assert (gid[rows] == gid[rows][0]).all()
        assert torch.equal(first[rows], first[rows][:1].expand_as(first[rows]))
    assert len({tuple(s.tolist()) for s in first[::group_size]}) == batch.shape[0] // group_size  # distinct groups
    assert ((batch["episode_id"][..., 0] == batch["episode_id"][:, :1, 0]) | ~mask).all()  # one episode per row
    last = mask.sum(1) - 1
    assert batch["next", "done"][torch.arange(len(gid)), last].all()
    assert int((batch["next", "done"].squeeze(-1) & mask).sum()) == len(gid)  # no episode end before the last step


def _parallel():
    return ParallelEnv(3, functools.partial(GymEnv, "CartPole-v1"), mp_start_method="fork")


@pytest.mark.parametrize(
    "make",
    [lambda: SerialEnv(3, lambda: GymEnv("CartPole-v1")), _parallel, lambda: vec_env(3)],
    ids=["serial", "parallel", "vector"],
)
def test_grouped_env_seeds_members_alike_with_any_number_of_envs(make):
    env = GroupedEnv(make(), group_size=2, seed=3, id_offset=0)  # 3 envs, groups of 2: N is not a multiple of G
    td = env.reset()
    obs, gid, eid = td["observation"], td["group_id"].squeeze(-1), td["episode_id"].squeeze(-1)
    assert gid.tolist() == [0, 0, 1] and eid.tolist() == [0, 1, 2]
    assert torch.equal(obs[0], obs[1]) and not torch.equal(obs[0], obs[2])
    # sub-env 0 ends its episode: it takes the next job at once, the second member of group 1 (same start as env 2)
    td2 = env.reset(td.clone().set("_reset", torch.tensor([True, False, False]).view(3, 1)))
    assert td2["group_id"].squeeze(-1).tolist() == [1, 0, 1] and td2["episode_id"][0].item() == 3
    assert torch.equal(td2["observation"][0], obs[2])
    env.close()


def test_one_group_member_after_another_on_a_single_env():
    env = GroupedEnv(SerialEnv(1, lambda: GymEnv("CartPole-v1")), group_size=3, seed=0, id_offset=0)
    batch = next(iter(GroupBatcher(collector(env, 32))))
    check_groups(batch, 3)
    assert batch["episode_id"][:, 0, 0].tolist() == [0, 1, 2]


def test_exactly_one_reset_per_episode():
    counters = []

    def make():
        counters.append(CountResets(gym.make("CartPole-v1")))
        return GymWrapper(counters[-1])

    env = GroupedEnv(SerialEnv(4, make), group_size=2, seed=0)
    c = collector(env, 400)
    batch = next(iter(c))
    episodes_started = 4 + int(batch["next", "done"].sum())  # the first reset, then one per finished episode
    assert sum(k.resets for k in counters) == episodes_started  # no second, unseeded reset after the seeded one
    assert sum(k.seeded for k in counters) == episodes_started
    c.shutdown()


def test_native_autoreset_and_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="SAME_STEP"):
        GroupedEnv(vec_env(2, AutoresetMode.SAME_STEP), group_size=2)
    with pytest.raises(ValueError, match="group_size"):
        GroupedEnv(vec_env(2), group_size=1)
    with pytest.raises(ValueError, match="schedule"):
        GroupedEnv(vec_env(2), group_size=2, schedule="sync")
    with pytest.raises(ValueError, match="max_episode_steps"):
        GroupedEnv(vec_env(2), group_size=2, max_episode_steps=0)
    with pytest.raises(TypeError, match="TorchRL env"):
        GroupedEnv(gym.make("CartPole-v1"), group_size=2)


def test_episode_that_never_ends_raises_naming_the_time_limit():
    env = GroupedEnv(GymWrapper(NeverEnds()), group_size=2, max_episode_steps=50)
    with pytest.raises(RuntimeError, match=r"StepCounter\(max_steps=...\).*TimeLimit"):
        next(iter(GroupBatcher(collector(env, 16))))
    # with a time limit the same env gives whole groups
    limited = TransformedEnv(GymWrapper(NeverEnds()), StepCounter(max_steps=10))
    limited = GroupedEnv(limited, group_size=2, max_episode_steps=50)
    batch = next(iter(GroupBatcher(collector(limited, 16))))
    assert batch.shape == (2, 10)


@pytest.mark.parametrize("schedule", ["async", "lockstep"])
def test_group_batcher_yields_whole_groups_and_counts_env_steps(schedule):
    env = GroupedEnv(vec_env(6), group_size=4, seed=0, schedule=schedule)
    c = collector(env, 60)
    batcher = GroupBatcher(c, groups_per_batch=2)
    held_back = 0
    for i, batch in enumerate(batcher):
        assert batch.shape[0] == 8
        check_groups(batch, 4)
        GroupRelativeAdvantage(group_size=4)(batch)  # whole groups: no error
        held_back += batcher.num_pending > 0
        assert batcher.policy_version == i  # advanced once per batch the loop asked for
        if i == 3:
            break
    assert held_back  # members of a group finish in different collector batches
    assert batcher.env_steps == env.env_steps  # every env step the collector took, yielded or not
    if schedule == "lockstep":
        assert env.scheduler.groups_completed >= 8
    c.shutdown()


def test_staleness_bound_drops_and_reports_old_groups():
    env = GroupedEnv(vec_env(8), group_size=4, seed=1)
    c = collector(env, 16)  # short polls: groups span several policy versions
    batcher = GroupBatcher(c, max_policy_lag=0)
    for i, _ in enumerate(batcher):
        assert batcher.last_max_lag == 0
        if i == 5:
            break
    assert batcher.groups_dropped_stale > 0 and batcher.stats["groups_dropped_stale"] == batcher.groups_dropped_stale
    manual = GroupBatcher(collector(GroupedEnv(vec_env(4), 2, seed=0), 16), auto_version=False)
    next(iter(manual))
    assert manual.policy_version == 0 and manual.new_policy_version() == 1
    c.shutdown()


def test_impossible_batcher_configurations_raise_early():
    with pytest.raises(TypeError, match="collector"):
        GroupBatcher(None, 2, 1)
    c = collector(GroupedEnv(vec_env(4), group_size=2, seed=0))
    with pytest.raises(ValueError, match="group_size=2"):
        GroupBatcher(c, 4, 1)  # the groups of the env have 2 members: a group of 4 never fills
    with pytest.raises(ValueError, match="groups_per_batch"):
        GroupBatcher(c, groups_per_batch=0)
    with pytest.raises(ValueError, match="max_policy_lag"):
        GroupBatcher(c, max_policy_lag=-1)
    # the env is out of reach (an iterable, or worker processes): group_size is required, and a wrong one is caught
    with pytest.raises(ValueError, match="pass group_size"):
        GroupBatcher(iter(c))
    with pytest.raises(ValueError, match="end after 2 members"):
        next(iter(GroupBatcher(iter(c), group_size=4)))
    with pytest.raises(ValueError, match="more members"):
        next(iter(GroupBatcher(iter(collector(GroupedEnv(vec_env(4), group_size=3, seed=0))), group_size=2)))
    c.shutdown()


def _worker_env(seed: int, worker: int):
    return GroupedEnv(vec_env(3), group_size=2, seed=seed, id_offset=worker * ID_NAMESPACE)


def test_groups_never_mix_collector_workers():
    """Collector(backend="process"): one GroupedEnv per worker, each with its own id namespace."""
    mp.set_start_method("fork", force=True)
    factories = [functools.partial(_worker_env, 10, 0), functools.partial(_worker_env, 11, 1)]
    c = Collector(
        factories,
        None,
        num_collectors=2,
        backend="process",
        sync=True,
        frames_per_batch=60,
        total_frames=-1,
        auto_register_policy_transforms=False,
    )
    batcher = GroupBatcher(c, group_size=2, groups_per_batch=2)
    workers = set()
    for i, batch in enumerate(batcher):
        check_groups(batch, 2)
        ns = batch["episode_id"][:, 0, 0] // ID_NAMESPACE
        assert (ns[0::2] == ns[1::2]).all() and (batch["group_id"][:, 0, 0] // ID_NAMESPACE == ns).all()
        workers |= set(ns.tolist())
        if i == 5:
            break
    assert workers == {0, 1}
    assert batcher.env_steps % 60 == 0 and batcher.env_steps >= 60 * 2  # whole collector batches, both workers
    c.shutdown()


def _steps(rows):
    """A fake collector batch: ``rows`` of (episode_id, group_id, done) steps, one row per sub-env."""
    from tensordict import TensorDict

    t = torch.tensor(rows, dtype=torch.int64)  # [N, T, 3]
    return TensorDict(
        {
            "episode_id": t[..., 0:1],
            "group_id": t[..., 1:2],
            "observation": t[..., 0:1].float(),
            "next": {"done": t[..., 2:3].bool()},
        },
        batch_size=t.shape[:2],
    )


def test_group_batcher_drops_dead_and_stale_groups_through_the_core_harvest():
    """The group bookkeeping is pg_extras.GroupHarvest's: a group short of members once a later one started is dead
    (its kept steps go, its running members' steps are thrown away as they arrive); a stale group goes too."""
    batches = [
        _steps([[(0, 0, 0), (0, 0, 1)], [(1, 0, 0), (1, 0, 0)]]),  # group 0 (of 3): episodes 0 and 1
        _steps([[(2, 1, 0), (2, 1, 0)], [(3, 1, 0), (3, 1, 0)]]),  # group 1 starts: group 0's third member was lost
        _steps([[(2, 1, 1), (4, 1, 0)], [(1, 0, 0), (1, 0, 1)]]),  # episode 1 (of dead group 0) still arrives
        _steps([[(4, 1, 1), (5, 2, 0)], [(3, 1, 1), (6, 2, 0)]]),  # group 1 complete, one policy version later
    ]

    def feed(batcher, log):
        for i, batch in enumerate(batches):
            if i == 3:
                batcher.new_policy_version()
            yield batch
            log.append((batcher.num_pending, batcher.groups_abandoned, batcher._harvest.dropped_running))

    log = []
    stale = GroupBatcher([], group_size=3, max_policy_lag=0, auto_version=False)
    stale.collector = feed(stale, log)  # a collector that also updates the policy before its last batch
    assert list(stale) == []
    assert log[:3] == [(4, 0, frozenset()), (4, 1, {1}), (6, 1, frozenset())]
    assert stale.groups_dropped_stale == 1 and stale.groups_yielded == 0 and stale.num_pending == 2  # group 2 only
    fresh = GroupBatcher(iter(batches), group_size=3)
    (batch,) = list(fresh)
    assert batch["episode_id"][:, 0, 0].tolist() == [2, 3, 4] and batch["collector", "mask"].sum(1).tolist() == [3, 3, 2]
    assert fresh.last_max_lag == 0 and fresh.groups_abandoned == 1 and fresh.stats["groups_yielded"] == 1


class FixedLength(gym.Env):
    """Every episode lasts 3 steps with reward 1 per step: every group has zero spread (no signal)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype("float32"), {}

    def step(self, action):
        self.t += 1
        return self.np_random.uniform(-1, 1, 2).astype("float32"), 1.0, self.t >= 3, False, {}


def test_dynamic_sampling_on_a_task_without_signal_raises_instead_of_hanging():
    from pg_extras.signal import NoSignalWarning

    env = GroupedEnv(SerialEnv(2, lambda: GymWrapper(FixedLength(), categorical_action_encoding=True)), group_size=2)
    batches = GroupBatcher(collector(env, 24), dynamic_sampling=True, max_uninformative_groups=40)
    budget, seen = 10**9, 0
    with pytest.warns(NoSignalWarning, match="dropped every complete group"), pytest.raises(RuntimeError, match="zero spread"):
        for _ in batches:  # the README's loop shape: it would never get here, and never return
            seen += 1
            if batches.env_steps >= budget:
                break
    assert seen == 0 and batches.groups_dropped_uninformative >= 40
    # a finite collector that ends without a batch says why
    env = GroupedEnv(SerialEnv(2, lambda: GymWrapper(FixedLength(), categorical_action_encoding=True)), group_size=2)
    finite = Collector(env, None, frames_per_batch=24, total_frames=96, auto_register_policy_transforms=False)
    with pytest.warns(NoSignalWarning, match="no batch was yielded"):
        assert list(GroupBatcher(finite, dynamic_sampling=True)) == []


def test_group_batcher_exposes_the_collector_controls_only():
    """GroupBatcher forwards the collector's controls it means to (weights, seed, shutdown), not every attribute."""
    env = GroupedEnv(SerialEnv(1, lambda: GymEnv("CartPole-v1")), group_size=2, seed=0, id_offset=0)
    inner = collector(env, 32)
    batcher = GroupBatcher(inner)
    with pytest.raises(AttributeError):
        batcher.frames_per_batch  # noqa: B018 - the collector's own attribute: batcher.collector.frames_per_batch
    assert batcher.collector is inner
    with pytest.raises(RuntimeError, match="update policy weights"):  # forwarded: this collector has no policy module
        batcher.update_policy_weights_()
    assert isinstance(batcher.set_seed(3), int)
    batcher.shutdown()
