"""TRPOLoss.trust_region_step: KL bound, improvement, restoration on a failed line search; TRPOStepper."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.distributions import kl_divergence
from torchrl.modules import ProbabilisticActor
from torchrl_helpers import ACT_DIM, clone_module, critic, discrete_actor, make_actor, padded_batch

from pg_extras import get_flat_params
from torchrl_pg_extras import GroupRelativeAdvantage, TRPOLoss, TRPOStepper

torch.set_num_threads(1)


def masked_kl(actor_old, actor_new, td, action_dims: int = 1):
    """Exact mean KL(pi_old || pi_new) over the valid steps, computed independently of the loss: the joint KL divided
    by ``action_dims`` (kl_reduction="mean" averages over the action dimensions, docs/maths.md#kl-reduction)."""
    with torch.no_grad():
        kl = kl_divergence(actor_old.get_dist(td), actor_new.get_dist(td))
    return kl[td["collector", "mask"]].mean() / action_dims


def surrogate(actor, td, normalize=True):
    m = td["collector", "mask"]
    adv = td["advantage"].squeeze(-1)
    if normalize:
        adv = (adv - adv[m].mean()) / (adv[m].std() + 1e-8)
    with torch.no_grad():
        dist = actor.get_dist(td)
        lp = dist.log_prob(td["action"])
        lp = lp if lp.shape == td.shape else lp.sum(-1)
    return (torch.exp(lp - td["action_log_prob"]) * adv)[m].mean()


@pytest.mark.parametrize("kl_reduction", ["mean", "joint"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
@pytest.mark.parametrize("max_kl", [0.001, 0.02])
def test_post_step_kl_within_bound_and_surrogate_improves(kind, max_kl, kl_reduction):
    actor = make_actor(kind)
    td = padded_batch(actor, perturb=0.0)
    before = clone_module(actor)
    loss = TRPOLoss(actor, critic(), max_kl=max_kl, kl_reduction=kl_reduction)
    assert TRPOLoss(actor, critic()).kl_reduction == "mean"  # sb3-contrib's convention, as SB3's TRPO and the core
    result = loss.trust_region_step(td)
    assert bool(result["accepted"])
    dims = ACT_DIM if kind == "continuous" and kl_reduction == "mean" else 1
    kl = masked_kl(before, actor, td, dims)
    assert 0 < kl <= max_kl * (1 + 1e-4)
    torch.testing.assert_close(result["kl"], kl, rtol=1e-3, atol=1e-7)
    assert surrogate(actor, td) > surrogate(before, td)
    torch.testing.assert_close(result["improvement"], surrogate(actor, td) - surrogate(before, td), rtol=1e-3, atol=1e-6)
    assert 1 <= int(result["steps_tried"]) <= 10


class JumpLogits(nn.Module):
    """State-independent logits ``w + 100 * [w_0 > threshold]``: the jump is invisible to gradients (and to the
    Fisher matrix) but any step that raises ``w_0`` crosses it, so every line-search candidate violates the KL bound."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.threshold = 1e-7

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        logits = self.w + 100.0 * (self.w[0] > self.threshold).to(self.w.dtype) * torch.tensor([1.0, 0.0])
        return logits.expand(*observation.shape[:-1], 2)


def test_failed_line_search_restores_parameters():
    actor = ProbabilisticActor(
        TensorDictModule(JumpLogits(), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    n = 8
    td = TensorDict(
        {
            "observation": torch.randn(1, n, 3),
            "action": torch.tensor([[0, 1] * (n // 2)]),
            "advantage": torch.tensor([[1.0, -1.0] * (n // 2)]).unsqueeze(-1),
            "action_log_prob": torch.full((1, n), -0.6931472),
        },
        [1, n],
    )
    loss = TRPOLoss(actor, None, max_kl=0.01, line_search_max_iter=4, normalize_advantage=False)
    before = get_flat_params(loss.actor_parameters()).clone()
    result = loss.trust_region_step(td)
    assert not bool(result["accepted"])
    assert int(result["steps_tried"]) == 4
    assert float(result["kl"]) == 0.0 and float(result["step_fraction"]) == 0.0
    assert torch.equal(get_flat_params(loss.actor_parameters()), before)


def test_critic_free_trpo_with_group_advantages():
    actor = discrete_actor()
    td = padded_batch(actor, perturb=0.0).exclude("advantage")
    loss = TRPOLoss(actor, None, max_kl=0.01)
    with pytest.raises(KeyError, match="make_value_estimator"):
        loss.trust_region_step(td)
    loss.make_value_estimator(GroupRelativeAdvantage(group_size=2))
    before = clone_module(actor)
    result = loss.trust_region_step(td)
    assert bool(result["accepted"]) and masked_kl(before, actor, td) <= 0.01 * (1 + 1e-4)
    assert set(loss(td).keys()) == {"loss_objective", "kl_approx"}


def test_stepper_updates_actor_in_trust_region_and_critic_separately():
    actor, value_net = discrete_actor(), critic()
    td = padded_batch(actor, perturb=0.0).exclude("advantage", "value_target")
    loss = TRPOLoss(actor, value_net, max_kl=0.01)
    loss.make_value_estimator(gamma=0.9, lmbda=0.9)
    before_actor, before_critic = clone_module(actor), clone_module(value_net)
    critic_loss_before = loss.loss_critic(td.clone())
    stepper = TRPOStepper(loss, torch.optim.Adam(loss.critic_parameters(), lr=1e-2), critic_updates=5, critic_batch_size=4)
    metrics = stepper.step(None, td)
    assert bool(metrics["accepted"]) and masked_kl(before_actor, actor, td) <= 0.01 * (1 + 1e-4)
    assert "advantage" in td.keys() and "value_target" in td.keys()  # computed once, before the critic moved
    moved = [not torch.equal(a, b) for a, b in zip(before_critic.parameters(), value_net.parameters(), strict=True)]
    assert all(moved)
    assert loss.loss_critic(td) < critic_loss_before
    with pytest.raises(ValueError, match="actor parameters"):
        TRPOStepper(loss, torch.optim.Adam(list(actor.parameters()) + loss.critic_parameters()))
    with pytest.raises(ValueError, match="critic_optimizer is required"):
        TRPOStepper(loss, None)


def test_stepper_inside_a_torchrl_trainer():
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode
    from torchrl.collectors import Collector
    from torchrl.envs import GymWrapper
    from torchrl.trainers import Trainer

    vec = gym.make_vec(
        "CartPole-v1", num_envs=4, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env = GymWrapper(vec, categorical_action_encoding=True)
    actor = ProbabilisticActor(
        TensorDictModule(nn.Linear(4, 2), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    value_net = TensorDictModule(nn.Linear(4, 1), ["observation"], ["state_value"])
    loss = TRPOLoss(actor, value_net)
    stepper = TRPOStepper(loss, torch.optim.Adam(loss.critic_parameters(), lr=1e-3), critic_updates=2)
    collector = Collector(env, actor, frames_per_batch=256, total_frames=512, auto_register_policy_transforms=False)
    trainer = Trainer(
        collector=collector,
        total_frames=512,
        frame_skip=1,
        optim_steps_per_batch=1,
        loss_module=loss,
        optimization_stepper=stepper,
        progress_bar=False,
    )
    actor_before, critic_before = clone_module(actor), clone_module(value_net)
    trainer.train()
    assert not torch.equal(actor_before.module[0].weight, actor.module[0].weight)
    assert not torch.equal(critic_before.module.weight, value_net.module.weight)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_fast_fisher_product_is_the_fisher_of_the_mean_kl(kind, monkeypatch):
    """TRPOLoss's Gauss-Newton product (pg_extras.mlp_fvp_fn for an MLP actor, else the autograd form or the double
    backward) equals the double backward of the masked mean KL at theta_old."""
    import pg_extras
    import torchrl_pg_extras.trpo as trpo_module

    used = []
    original = trpo_module.mlp_fvp_fn
    monkeypatch.setattr(trpo_module, "mlp_fvp_fn", lambda *a, **k: used.append(original(*a, **k)) or used[-1])
    actor = make_actor(kind)
    loss = TRPOLoss(actor, critic())
    td = padded_batch(actor)
    mask, params = loss._mask(td), loss.actor_parameters()
    fvp = loss._fisher_product(td, loss._dist(td), mask, params)
    if kind == "continuous":  # TanhNormal: no closed-form Fisher, trust_region_step takes the double backward
        assert fvp is None
        return
    assert used and used[-1] is not None  # the actor is an MLP: the autograd-free product is the one used
    with torch.no_grad():
        old = loss._dist(td)
    exact = pg_extras.fisher_vector_product_fn(pg_extras.action_kl([old], [loss._dist(td)], batch_dims=2, mask=mask), params)
    v = torch.randn(sum(p.numel() for p in params))
    torch.testing.assert_close(fvp(v), exact(v), atol=1e-5, rtol=1e-4)
