"""GroupReset (same-seed resets, group ids) and GroupBatcher (complete groups only) on real CartPole envs."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torchrl.collectors import Collector
from torchrl.envs import GymEnv, GymWrapper, SerialEnv, TransformedEnv

from torchrl_pg_extras import GroupBatcher, GroupRelativeAdvantage, GroupReset

torch.set_num_threads(1)


def vec_env(n: int, mode=AutoresetMode.DISABLED) -> GymWrapper:
    return GymWrapper(
        gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}),
        categorical_action_encoding=True,
    )


def check_groups(batch, group_size):
    """Every group has ``group_size`` rows, identical first observations, distinct from other groups."""
    gid = batch["group_id"][:, 0, 0]
    first = batch["observation"][:, 0]
    labels, counts = torch.unique(gid, return_counts=True)
    assert (counts == group_size).all()
    starts = []
    for g in labels:
        rows = first[gid == g]
        assert torch.equal(rows, rows[:1].expand_as(rows))
        starts.append(rows[0])
    assert len({tuple(s.tolist()) for s in starts}) == len(starts)
    mask = batch["collector", "mask"]
    assert ((batch["group_id"][..., 0] == gid[:, None]) | ~mask).all()  # constant along each episode
    last = mask.sum(1) - 1
    assert batch["next", "done"][torch.arange(len(gid)), last].all()


@pytest.mark.parametrize(
    "make_env", [lambda: SerialEnv(4, lambda: GymEnv("CartPole-v1")), lambda: vec_env(4)], ids=["SerialEnv", "gym-vector"]
)
def test_group_reset_same_start_states_and_ids(make_env):
    env = TransformedEnv(make_env(), GroupReset(group_size=2, seed=3))
    td = env.reset()
    obs, gid = td["observation"], td["group_id"].squeeze(-1)
    assert torch.equal(obs[0], obs[1]) and torch.equal(obs[2], obs[3]) and not torch.equal(obs[0], obs[2])
    assert gid[0] == gid[1] and gid[2] == gid[3] and gid[0] != gid[2]
    # partial reset of one member: its next episode starts where its group mate's next episode will start
    reset = torch.tensor([True, False, False, False]).view(4, 1)
    td2 = env.reset(td.clone().set("_reset", reset))
    assert td2["group_id"][0] != gid[0] and torch.equal(td2["group_id"][1:].squeeze(-1), gid[1:])
    td3 = env.reset(td2.clone().set("_reset", torch.tensor([False, True, False, False]).view(4, 1)))
    assert torch.equal(td3["observation"][0], td3["observation"][1]) and td3["group_id"][0] == td3["group_id"][1]
    env.close()


def test_group_reset_errors():
    with pytest.raises(ValueError, match="does not divide"):
        TransformedEnv(vec_env(3), GroupReset(group_size=2))
    with pytest.raises(ValueError, match="group_size"):
        GroupReset(group_size=0)
    with pytest.raises(ValueError, match="SAME_STEP"):
        TransformedEnv(vec_env(2, AutoresetMode.SAME_STEP), GroupReset(group_size=2)).reset()


@pytest.mark.parametrize("traj_format", ["padded", "cat"])
def test_group_batcher_yields_complete_groups(traj_format):
    env = TransformedEnv(vec_env(8), GroupReset(group_size=4, seed=0))
    collector = Collector(
        env,
        None,
        frames_per_batch=64,
        total_frames=-1,
        trajs_per_batch=6,
        traj_format=traj_format,
        auto_register_policy_transforms=False,
    )
    batcher = GroupBatcher(collector, group_size=4, groups_per_batch=3)
    split = 0
    for i, batch in enumerate(batcher):
        assert batch.shape[0] == 12
        check_groups(batch, 4)
        GroupRelativeAdvantage(group_size=4)(batch)  # whole groups: no error
        split += batcher.num_pending > 0
        if i == 3:
            break
    assert split  # members of a group do finish in different collector batches
    collector.shutdown()
    with pytest.raises(ValueError, match="groups_per_batch"):
        GroupBatcher(collector, group_size=4, groups_per_batch=0)
