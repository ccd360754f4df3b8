"""The examples' gSDE actor (``continuous="gsde"``, TorchRL's ``gSDEModule``) and the losses on actors that write the
action key: the loss evaluates the stored action, not one its actor recomputes."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_pg_extras import GRPOLoss, REINFORCELoss, TRPOLoss


@pytest.fixture
def common(examples_common):
    return examples_common


def _batch(common, frames: int = 32):
    """``frames`` steps of 2 sub-envs played by a gSDE actor (``env.rollout`` keeps the private noise key, which a
    collector drops; the loss needs none)."""
    torch.manual_seed(0)
    env = common.make_env("Pendulum-v1", 2, seed=0, gsde_state_dim=16)
    actor = common.make_actor(env, 16, torch.device("cpu"), "gsde")
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        batch = env.rollout(frames, actor, break_when_any_done=False)
    env.close()
    return actor, batch


def test_gsde_noise_is_held_within_an_episode_and_gives_the_action(common):
    actor, batch = _batch(common)
    eps = batch["_eps_gSDE"]  # [envs, T, n_act, state_dim]
    assert torch.equal(eps[:, 1:], eps[:, :1].expand_as(eps[:, 1:]))  # one noise per episode (32 < 200 steps)
    assert not torch.equal(eps[0, 0], eps[1, 0])  # one per sub-env
    module = next(m for m in actor.modules() if type(m).__name__ == "gSDEModule")
    noise = ((module.sigma * eps) @ batch["gsde_state"].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(batch["action"], batch["gsde_mean"] + noise)  # a = mu(s) + (sigma eps) h(s)
    # the log-probability is that of Normal(mu, ||sigma h||): it needs no noise, so the loss works without it
    for td in (batch.copy(), batch.exclude("_eps_gSDE")):
        torch.testing.assert_close(actor.get_dist(td).log_prob(batch["action"]), batch["action_log_prob"])


@pytest.mark.parametrize("loss_class", [TRPOLoss, REINFORCELoss, GRPOLoss])
def test_losses_evaluate_the_stored_action_of_an_actor_that_writes_it(common, loss_class):
    """gSDEModule writes ``action`` whenever the actor runs, the loss's own pass included: after the actor has
    changed, the loss must still score the collected action (it did not: its recomputed action carried a gradient)."""
    actor, batch = _batch(common)
    batch["advantage"] = torch.randn(*batch.batch_size, 1)
    batch["value_target"] = torch.randn(*batch.batch_size, 1)
    with torch.no_grad():
        for p in actor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    stored = batch["action"].clone()
    critic = common.make_critic(common.make_env("Pendulum-v1", 1, seed=0), 16, torch.device("cpu"))
    loss = loss_class(actor) if loss_class is GRPOLoss else loss_class(actor, critic)
    out = loss(batch)
    assert torch.equal(batch["action"], stored)
    objective = out["loss_objective"] if "loss_objective" in out.keys() else out["loss_actor"]
    assert torch.isfinite(objective)
    expected = actor.get_dist(batch.copy()).log_prob(stored)
    assert not torch.allclose(expected, batch["action_log_prob"])  # the actor did change
    if loss_class is REINFORCELoss:  # -mean(log pi(a|s) A) of the stored action
        torch.testing.assert_close(out["loss_actor"], -(expected * batch["advantage"].squeeze(-1)).mean())
