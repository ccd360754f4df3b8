"""sb3_pg_extras.TRPO's fast paths for SB3's default MLP policy give the same update as the generic autograd paths.

* actor: Gauss-Newton Fisher-vector products through ``pg_extras.MlpLinearization`` (``_mlp_actor_fvp``) equal
  the autograd Gauss-Newton product and the double-backward Hessian of the mean KL;
* critic: features computed once (``_critic_path``), hand-written MLP backpropagation (``_mlp_value_step``) and a
  critic-only Adam sharing the policy optimizer's state (``_critic_optimizer``);
* a whole ``train()`` with the fast paths equals ``train()`` with all of them switched off (float noise only),
  and every other kind of policy takes the generic paths.
"""

from __future__ import annotations

import copy

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiDiscrete
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

import sb3_pg_extras.trpo.algo as algo
from pg_extras import distribution_fvp_fn, fisher_vector_product_fn
from sb3_pg_extras import TRPO


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def _model(env_id: str = "CartPole-v1", **kwargs) -> TRPO:
    kwargs = {"n_steps": 64, "batch_size": 32, "n_critic_updates": 3, "seed": 0, "device": "cpu", **kwargs}
    model = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), **kwargs)
    _, callback = model._setup_learn(10_000)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def _actor(model: TRPO, obs: th.Tensor):
    distribution = model.policy.get_distribution(obs)
    dists = algo._torch_distributions(distribution)
    log_prob = distribution.log_prob(distribution.sample())
    return dists, algo.reachable_parameters([log_prob], list(model.policy.parameters()))


@pytest.mark.parametrize(
    "env_id, policy_kwargs",
    [
        ("CartPole-v1", dict(net_arch=[16, 16])),
        ("Pendulum-v1", dict(net_arch=[16], activation_fn=nn.ReLU, log_std_init=-0.7)),  # (std != 1)
        ("Pendulum-v1", dict(net_arch=dict(pi=[8, 8], vf=[4]), share_features_extractor=False)),
    ],
)
def test_mlp_actor_fvp_equals_autograd_products(env_id, policy_kwargs):
    model = _model(env_id, policy_kwargs=policy_kwargs)
    obs = th.as_tensor(model.rollout_buffer.observations.reshape(128, -1))
    dists, actor = _actor(model, obs)
    fast = algo._mlp_actor_fvp(model.policy, obs, actor, dists)
    assert fast is not None
    gauss_newton = distribution_fvp_fn(dists, actor)
    old = [algo._detached(d) for d in dists]
    hessian = fisher_vector_product_fn(algo._per_sample_kl(old, dists).mean(), actor)
    for seed in range(3):
        v = th.randn(sum(p.numel() for p in actor), generator=th.Generator().manual_seed(seed))
        reference = gauss_newton(v)
        assert reference.norm() > 1e-3
        th.testing.assert_close(fast(v), reference, rtol=1e-4, atol=1e-6 * reference.norm().item())
        th.testing.assert_close(fast(v), hessian(v), rtol=1e-4, atol=1e-5 * reference.norm().item())


def test_mlp_value_step_gradients_equal_autograd():
    model = _model("Pendulum-v1", policy_kwargs=dict(net_arch=[16, 8], activation_fn=nn.ReLU))
    policy = model.policy
    obs = th.as_tensor(model.rollout_buffer.observations.reshape(128, -1))
    target = th.randn(128)
    critic = [p for p in algo.reachable_parameters([policy.predict_values(obs)], list(policy.parameters()))]
    step = algo._mlp_value_step(policy, critic)
    assert step is not None
    policy.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(target, policy.predict_values(obs).flatten())
    expected = th.autograd.grad(loss, critic)
    inputs, _ = algo._critic_path(policy, obs)
    th.testing.assert_close(step(inputs, target), loss.detach())
    for p, g in zip(critic, expected, strict=True):
        th.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


def _train_once(model: TRPO, fast: bool, monkeypatch) -> tuple[dict, dict]:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(algo, "_mlp_actor_fvp", lambda *args: None)
            patch.setattr(algo, "distribution_fvp_fn", lambda *args, **kwargs: None)  # double-backward Hessian
            patch.setattr(algo, "_critic_path", lambda policy, obs: (obs, policy.predict_values))
            patch.setattr(algo, "_mlp_value_step", lambda *args: None)
            patch.setattr(algo, "_critic_optimizer", lambda optimizer, params: optimizer)
        model.rollout_buffer = copy.deepcopy(model.rollout_buffer)
        th.manual_seed(1)  # the critic's minibatch shuffles
        model.train()
    return copy.deepcopy(model.policy.state_dict()), copy.deepcopy(model.policy.optimizer.state_dict())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_train_with_fast_paths_equals_generic_paths(env_id, monkeypatch):
    model = _model(env_id, policy_kwargs=dict(log_std_init=0.4) if env_id == "Pendulum-v1" else None)
    state, optim_state, buffer = (
        copy.deepcopy(model.policy.state_dict()),
        copy.deepcopy(model.policy.optimizer.state_dict()),
        model.rollout_buffer,
    )
    results = []
    for fast in (True, False):
        model.policy.load_state_dict(state)
        model.policy.optimizer.load_state_dict(copy.deepcopy(optim_state))
        model.rollout_buffer = buffer
        results.append((*_train_once(model, fast, monkeypatch), model.last_trust_region_result))
    (fast_params, fast_optim, fast_result), (slow_params, slow_optim, slow_result) = results
    assert fast_result.accepted and slow_result.accepted and fast_result.steps_tried == slow_result.steps_tried
    assert abs(fast_result.kl - slow_result.kl) < 1e-3 * slow_result.kl
    for name in state:
        step = slow_params[name] - state[name]
        assert step.abs().max() > 0, name  # every parameter moved (actor by the step, critic by Adam)
        th.testing.assert_close(fast_params[name], slow_params[name], rtol=0, atol=2e-3 * step.abs().max().item() + 1e-7)
    # One set of Adam moments, in the policy's optimizer, with the same step counts
    assert fast_optim["state"].keys() == slow_optim["state"].keys()
    for index, entry in slow_optim["state"].items():
        assert th.equal(fast_optim["state"][index]["step"], entry["step"])
        th.testing.assert_close(fast_optim["state"][index]["exp_avg"], entry["exp_avg"], rtol=1e-3, atol=1e-6)


class LinearExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = nn.Linear(observation_space.shape[0], features_dim)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(obs))


@pytest.mark.parametrize(
    "case",
    ["features_extractor", "gelu", "gsde", "multidiscrete", "frozen_log_std", "hook"],
)
def test_other_policies_take_the_generic_paths_and_train(case):
    kwargs: dict = {}
    env = "Pendulum-v1"
    if case == "features_extractor":
        kwargs = dict(policy_kwargs=dict(features_extractor_class=LinearExtractor, net_arch=[8]))
    elif case == "gelu":
        kwargs = dict(policy_kwargs=dict(activation_fn=nn.GELU, net_arch=[8]))
    elif case == "gsde":
        kwargs = dict(use_sde=True, policy_kwargs=dict(net_arch=[8]))
    elif case == "multidiscrete":
        env = lambda: IdentityEnvMultiDiscrete(3, ep_length=8)  # noqa: E731
        kwargs = dict(policy_kwargs=dict(net_arch=[8]))
    model = _model(env, **kwargs)
    if case == "frozen_log_std":
        model.policy.log_std.requires_grad_(False)
    if case == "hook":
        model.policy.mlp_extractor.policy_net.register_forward_hook(lambda *args: None)
    policy = model.policy
    obs = th.as_tensor(model.rollout_buffer.observations.reshape(128, -1)).float()
    dists, actor = _actor(model, obs)
    assert algo._mlp_actor_fvp(policy, obs, actor, dists) is None
    if case in ("features_extractor", "gelu", "hook"):
        critic = [p for p in policy.parameters() if all(p is not a for a in actor) and p.requires_grad]
        if case != "hook":  # (the hook is on the actor)
            assert algo._mlp_value_step(policy, critic) is None
        if case == "features_extractor":
            assert algo._critic_path(policy, obs)[1] == policy.predict_values
    before = [p.detach().clone() for p in policy.parameters()]
    model.train()
    assert model.last_trust_region_result is not None and model.last_trust_region_result.steps_tried >= 1
    assert any(not th.equal(a, p) for a, p in zip(before, policy.parameters(), strict=True))
    if case == "frozen_log_std":
        names = [name for name, _ in policy.named_parameters()]
        assert th.equal(before[names.index("log_std")], policy.log_std.detach())


def test_critic_optimizer_is_a_view_of_the_policy_optimizer():
    model = _model()
    optimizer = model.policy.optimizer
    critic = list(model.policy.value_net.parameters())
    sub = algo._critic_optimizer(optimizer, critic)
    assert sub is not optimizer and sub.state is optimizer.state
    assert sub.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert [id(p) for p in sub.param_groups[0]["params"]] == [id(p) for p in critic]
    # Another optimizer class: the policy's own optimizer is used
    sgd = th.optim.SGD(model.policy.parameters(), lr=0.1)
    assert algo._critic_optimizer(sgd, critic) is sgd
