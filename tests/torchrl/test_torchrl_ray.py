"""GRPO over Ray: Collector(backend="ray") on a local cluster, whole groups per worker, weights synced after updates."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch

ray = pytest.importorskip("ray")

from torchrl_pg_extras import ID_NAMESPACE, GroupBatcher, GroupRelativeAdvantage, GRPOLoss  # noqa: E402


@pytest.fixture
def common(examples_common):
    try:
        yield examples_common
    finally:
        if ray.is_initialized():
            ray.shutdown()


def test_grpo_over_ray_forms_whole_groups_and_syncs_weights(common):
    torch.manual_seed(0)
    group_size = 4
    args = argparse.Namespace(
        backend="ray", workers=2, env="CartPole-v1", num_envs=4, seed=0, mp_start_method=None, normalize_obs=False
    )
    probe = common.make_env("CartPole-v1", 1, 0)
    actor = common.make_actor(probe, 32, torch.device("cpu"))
    probe.close()
    initial = copy.deepcopy(actor)
    loss = GRPOLoss(actor)
    advantage = GroupRelativeAdvantage(group_size, mode="return_to_go")
    optim = torch.optim.Adam(loss.parameters(), lr=3e-3)
    collector = common.make_collector(args, actor, frames_per_batch=4 * 8, group_size=group_size)
    collector.update_policy_weights_(actor)
    batches = GroupBatcher(collector, group_size, groups_per_batch=1)
    versions, namespaces = [], set()
    try:
        for batch in batches:
            ids = batch["group_id"][batch[("collector", "mask")]]
            assert torch.unique(ids).numel() == 1  # one whole group
            assert batch.shape[0] == group_size  # of group_size episodes
            namespaces.add(int(ids[0]) // ID_NAMESPACE)  # a group never mixes workers: one namespace each
            out = loss(advantage(batch))
            optim.zero_grad()
            out["loss_objective"].backward()
            optim.step()
            collector.update_policy_weights_(actor)
            versions.append(batches.policy_version)
            if len(versions) >= 3 and len(namespaces) == 2:
                break
        # the last group's behaviour log-probs come from updated weights, not from the initial policy
        mask = batch[("collector", "mask")]
        with torch.no_grad():
            old = initial(batch.clone())["action_log_prob"][mask]
        behaviour = batch["action_log_prob"][mask]
        assert not torch.allclose(old, behaviour, atol=1e-4)
    finally:
        collector.shutdown()
    assert versions == list(range(len(versions))) and len(versions) >= 3  # the policy version advances with the updates
    assert namespaces == {0, 1}  # both Ray workers delivered groups
