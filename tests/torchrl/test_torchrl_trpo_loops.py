"""TRPO in the loop shapes TorchRL users write: the right one works, the wrong ones are refused with the fix."""

from __future__ import annotations

import pytest
import torch
from torchrl_helpers import critic, discrete_actor, padded_batch

from pg_extras import get_flat_params
from torchrl_pg_extras import TRPOLoss

torch.set_num_threads(1)


def test_backpropagating_the_surrogate_into_the_actor_is_refused():
    """The PPO-script shape (loss_objective + loss_critic, one optimizer) would be an unclipped policy gradient."""
    actor = discrete_actor()
    loss = TRPOLoss(actor, critic(), entropy_coeff=0.01)
    td = padded_batch(actor, perturb=0.0)
    out = loss(td)
    with pytest.raises(RuntimeError, match=r"loss_objective was backpropagated.*trust_region_step"):
        (out["loss_objective"] + out["loss_critic"]).backward()
    with pytest.raises(RuntimeError, match="loss_entropy was backpropagated"):
        loss(td)["loss_entropy"].backward()
    loss(td)["loss_critic"].backward()  # the critic's loss is an ordinary gradient loss
    assert all(p.grad is not None for p in loss.critic_parameters())
    assert all(p.grad is None for p in loss.actor_parameters())
    own = TRPOLoss(actor, critic(), differentiable_objective=True)  # an update rule of the user's own
    own(td)["loss_objective"].backward()
    assert all(p.grad is not None for p in own.actor_parameters())


def test_a_second_trust_region_step_on_the_same_batch_is_refused():
    """One step per minibatch (or per epoch) starts from a policy that did not collect the batch."""
    actor = discrete_actor()
    td = padded_batch(actor, perturb=0.0)
    loss = TRPOLoss(actor, critic(), max_kl=0.02)
    assert bool(loss.trust_region_step(td)["accepted"])
    moved = get_flat_params(loss.actor_parameters()).clone()
    with pytest.raises(ValueError, match=r"not the policy that collected this batch.*once on the whole"):
        loss.trust_region_step(td)
    assert torch.equal(get_flat_params(loss.actor_parameters()), moved)  # refused before any change
    loss.on_policy_tolerance = None  # a collector that lags on purpose: the user's choice
    assert bool(loss.trust_region_step(td)["accepted"])


def _collected(actor, envs: int = 3, steps: int = 8):
    """A collector-shaped ``[N, T]`` batch: trajectory ids constant along time except after a done step."""
    td = padded_batch(actor, perturb=0.0, lengths=[steps] * envs)
    done = torch.zeros(envs, steps, 1, dtype=torch.bool)
    done[0, 3] = True  # env 0 ends an episode at t=3 and starts trajectory 10 at t=4
    ids = torch.arange(envs)[:, None].expand(envs, steps).clone()
    ids[0, 4:] = 10
    td["next", "done"], td["next", "terminated"] = done, done.clone()
    td["next", "truncated"] = torch.zeros_like(done)
    td["collector", "traj_ids"] = ids
    return td.exclude("advantage", "value_target")


@pytest.mark.parametrize("shape", ["shuffled", "flattened"])
def test_advantage_on_data_not_in_time_order_is_refused(shape):
    actor = discrete_actor()
    loss = TRPOLoss(actor, critic())
    td = _collected(actor)
    loss(td.clone())  # in time order: GAE runs
    flat = td.reshape(-1)
    bad = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))] if shape == "shuffled" else flat
    with pytest.raises(ValueError, match=r"not in time order.*before flattening, shuffling"):
        loss(bad)
    with pytest.raises(ValueError, match="not in time order"):
        loss.trust_region_step(bad)
    loss.compute_advantage(td)  # the fix: the advantage on the collected batch, then any minibatch of it
    minibatch = td.reshape(-1)[torch.randperm(td.numel(), generator=torch.Generator().manual_seed(0))[:10]]
    assert torch.isfinite(loss(minibatch)["loss_critic"])
