"""Advantage estimators x update rules, by composing modules: each pair learns a contextual bandit.

The bandit: ``K`` contexts (one-hot observations), ``K`` arms, reward 1 for the arm that matches the context. Each
episode is one step; a GRPO group is ``G`` episodes of the same context (the same "start state"). A pair passes when the
policy's expected reward goes from ``1 / K`` to at least 0.9 within a few dozen updates.

| rule \\ estimator | mc | baseline (critic) | gae (critic) | group |
|---|---|---|---|---|
| pg (REINFORCELoss) | yes | yes | | yes |
| trust_region (TRPOLoss) | yes | yes | yes (default) | yes |
| ppo_clip (GRPOLoss) | | | | yes |
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.envs import ExplorationType, set_exploration_type
from torchrl.modules import ProbabilisticActor, ValueOperator

from torchrl_pg_extras import GroupRelativeAdvantage, GRPOLoss, MonteCarloEstimator, REINFORCELoss, TRPOLoss, TRPOStepper

torch.set_num_threads(1)
K, G = 4, 4


def bandit_actor() -> ProbabilisticActor:
    torch.manual_seed(0)
    net = nn.Linear(K, K)
    nn.init.zeros_(net.weight), nn.init.zeros_(net.bias)  # uniform policy: expected reward 1 / K
    return ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )


def bandit_critic() -> ValueOperator:
    return ValueOperator(nn.Linear(K, 1), in_keys=["observation"])


def bandit_batch(actor, n_groups: int = 16) -> TensorDict:
    """``[n_groups * G, 1]`` one-step episodes, ``G`` per context draw, as a collector of whole episodes gives them."""
    context = torch.randint(K, (n_groups,)).repeat_interleave(G)
    obs = nn.functional.one_hot(context, K).float()[:, None]
    end = torch.ones(len(context), 1, 1, dtype=torch.bool)
    td = TensorDict(
        {
            "observation": obs,
            "group_id": torch.arange(n_groups).repeat_interleave(G)[:, None, None],
            "next": {"observation": torch.zeros_like(obs), "done": end, "terminated": end, "truncated": ~end},
        },
        batch_size=[len(context), 1],
    )
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):  # sample, as a collector does
        td = actor(td)
    td["next", "reward"] = (td["action"] == context[:, None]).float().unsqueeze(-1)
    return td


def expected_reward(actor) -> float:
    with torch.no_grad():
        probs = torch.softmax(actor.module[0](TensorDict({"observation": torch.eye(K)}, [K]))["logits"], -1)
    return float(probs.diagonal().mean())


def train_with_optimizer(loss, actor, epochs: int = 1, updates: int = 40, lr: float = 0.1) -> float:
    optim = torch.optim.Adam(loss.parameters(), lr=lr)
    for _ in range(updates):
        batch = bandit_batch(actor)
        for _ in range(epochs):
            out = loss(batch)
            optim.zero_grad()
            sum(v for k, v in out.items() if k.startswith("loss_")).backward()
            optim.step()
    return expected_reward(actor)


def train_trpo(loss, actor, updates: int = 30) -> float:
    critic = torch.optim.Adam(loss.critic_parameters(), lr=0.05) if loss.critic_network is not None else None
    stepper = TRPOStepper(loss, critic, critic_updates=5 if critic else 0)
    for _ in range(updates):
        stepper.step(None, bandit_batch(actor))
    return expected_reward(actor)


def test_pg_x_mc():
    actor = bandit_actor()
    loss = REINFORCELoss(actor, normalize_advantage=True)  # default estimator: MonteCarloEstimator, no critic
    assert isinstance(loss.value_estimator, MonteCarloEstimator) and loss.critic_network is None
    assert train_with_optimizer(loss, actor) >= 0.9


def test_pg_x_baseline():
    actor = bandit_actor()
    loss = REINFORCELoss(actor, bandit_critic())  # MonteCarloEstimator with the critic as baseline
    assert loss.value_estimator.value_network is not None
    assert train_with_optimizer(loss, actor) >= 0.9


def test_pg_x_group():
    actor = bandit_actor()
    loss = REINFORCELoss(actor).make_value_estimator(GroupRelativeAdvantage(group_size=G))
    assert train_with_optimizer(loss, actor) >= 0.9


def test_trust_region_x_gae():
    actor = bandit_actor()
    loss = TRPOLoss(actor, bandit_critic(), max_kl=0.05)  # default estimator: TorchRL's GAE
    assert type(loss.value_estimator).__name__ == "GAE"
    assert train_trpo(loss, actor) >= 0.9


def test_trust_region_x_mc():
    actor = bandit_actor()
    loss = TRPOLoss(actor, max_kl=0.05).make_value_estimator(MonteCarloEstimator(gamma=0.99))  # critic-free TRPO
    assert train_trpo(loss, actor) >= 0.9


def test_trust_region_x_baseline():
    actor, critic = bandit_actor(), bandit_critic()
    loss = TRPOLoss(actor, critic, max_kl=0.05).make_value_estimator(MonteCarloEstimator(gamma=0.99, value_network=critic))
    assert train_trpo(loss, actor) >= 0.9


def test_trust_region_x_group():
    actor = bandit_actor()
    loss = TRPOLoss(actor, max_kl=0.05).make_value_estimator(GroupRelativeAdvantage(group_size=G))  # critic-free TRPO
    assert train_trpo(loss, actor) >= 0.9


def test_ppo_clip_x_group():
    actor = bandit_actor()
    loss = GRPOLoss(actor, clip_epsilon=0.2).make_value_estimator(GroupRelativeAdvantage(group_size=G))
    assert train_with_optimizer(loss, actor, epochs=4, updates=25) >= 0.9


@pytest.mark.parametrize("estimator", ["mc", "group"])
def test_ppo_clip_with_other_estimators(estimator):
    """GRPOLoss is PPO-clip (+ KL to a reference): any advantage module plugs in."""
    actor = bandit_actor()
    module = MonteCarloEstimator(gamma=1.0) if estimator == "mc" else GroupRelativeAdvantage(group_size=G, rloo=True)
    loss = GRPOLoss(actor, kl_coeff=0.01).make_value_estimator(module)
    assert train_with_optimizer(loss, actor, epochs=4, updates=25) >= 0.9


@pytest.mark.parametrize(
    "options",
    [
        dict(update_rule="cispo", clip_epsilon_high=0.28),
        dict(update_rule="sapo"),
        dict(delta=4.0),
        dict(clip_ratio_c=3.0),
        dict(kl_coeff=0.04, kl_estimator="k3+"),
        dict(kl_coeff=0.04, use_bias_correction_kl=True),
    ],
    ids=["cispo", "sapo", "two_sided_clip", "dual_clip", "k3_plus", "bias_corrected_kl"],
)
def test_grpo_loss_variants_learn(options):
    """The variants of issue 12 reach TorchRL through GRPOLoss options (each forwards to the core)."""
    actor = bandit_actor()
    loss = GRPOLoss(actor, **options).make_value_estimator(GroupRelativeAdvantage(group_size=G))
    assert train_with_optimizer(loss, actor, epochs=4, updates=25) >= 0.9


def test_grpo_loss_reference_mixing_and_bad_variant_values():
    actor = bandit_actor()
    loss = GRPOLoss(actor, kl_coeff=0.1)
    ref = loss.reference_actor_network_params.clone()
    with torch.no_grad():
        for p in loss.actor_network_params.values(include_nested=True, leaves_only=True):
            p.add_(1.0)
    loss.update_reference(0.25)  # TR-DPO: pi_ref <- 0.25 pi + 0.75 pi_ref
    for key in ref.keys(include_nested=True, leaves_only=True):
        torch.testing.assert_close(loss.reference_actor_network_params[key], ref[key] + 0.25)
    for bad, match in [(dict(update_rule="ppo"), "update_rule"), (dict(delta=1.0), "delta"), (dict(kl_estimator="k4"), "k4")]:
        with pytest.raises(ValueError, match=match):
            GRPOLoss(actor, **bad)
