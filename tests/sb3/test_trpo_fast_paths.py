"""sb3_pg_extras.TRPO's Fisher-vector products for MLP actors go through ``pg_extras.mlp_fvp_fn`` (no autograd).

* for SB3's MLP policies (every action space, shared or separate extractors, gSDE, a frozen ``log_std``) the product
  equals the autograd Gauss-Newton product and the double-backward Hessian of the mean KL (either ``kl_reduction``);
* a whole ``train()`` with it equals ``train()`` with autograd's products (float noise only);
* every other policy (a features extractor with parameters, another activation, a hook that changes the output)
  falls back to autograd (``pg_extras.gauss_newton_fvp_fn``) and trains.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from sb3_helpers import PointMass3D
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnvMultiBinary, IdentityEnvMultiDiscrete
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

import sb3_pg_extras.trpo.algo as algo
from pg_extras import action_kl, distribution_fvp_fn, fisher_vector_product_fn, reachable_parameters
from sb3_pg_extras import TRPO


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def _model(env_id="CartPole-v1", **kwargs) -> TRPO:
    kwargs = {"n_steps": 64, "batch_size": 32, "n_critic_updates": 3, "seed": 0, "device": "cpu", **kwargs}
    model = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), **kwargs)
    _, callback = model._setup_learn(10_000)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def _actor(model: TRPO):
    obs = th.as_tensor(model.rollout_buffer.observations.reshape(128, -1)).float()
    distribution = model.policy.get_distribution(obs)
    dists = algo._torch_distributions(distribution)
    log_prob = distribution.log_prob(distribution.sample())
    return obs, dists, reachable_parameters([log_prob], list(model.policy.parameters()))


MLP_CASES = {
    "categorical": ("CartPole-v1", dict(policy_kwargs=dict(net_arch=[16, 16]))),
    "gaussian_relu_std": ("Pendulum-v1", dict(policy_kwargs=dict(net_arch=[16], activation_fn=nn.ReLU, log_std_init=-0.7))),
    "gaussian_separate_extractors": (
        "Pendulum-v1",
        dict(policy_kwargs=dict(net_arch=dict(pi=[8, 8], vf=[4]), share_features_extractor=False)),
    ),
    "gsde": ("Pendulum-v1", dict(use_sde=True, policy_kwargs=dict(net_arch=[8]))),
    "multidiscrete": (lambda: IdentityEnvMultiDiscrete(3, ep_length=8), dict(policy_kwargs=dict(net_arch=[8]))),
    "multibinary": (lambda: IdentityEnvMultiBinary(3, ep_length=8), dict(policy_kwargs=dict(net_arch=[8]))),
    "frozen_log_std": ("Pendulum-v1", dict(policy_kwargs=dict(net_arch=[8]))),
    "multibinary_joint_kl": (
        lambda: IdentityEnvMultiBinary(3, ep_length=8),
        dict(kl_reduction="joint", policy_kwargs=dict(net_arch=[8])),
    ),
    "box3": (PointMass3D, dict(policy_kwargs=dict(net_arch=[8]))),
    "box3_joint_kl": (PointMass3D, dict(kl_reduction="joint", policy_kwargs=dict(net_arch=[8]))),
}


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_mlp_fvp_is_used_and_equals_autograd_products(case):
    env_id, kwargs = MLP_CASES[case]
    model = _model(env_id, **kwargs)
    if case == "frozen_log_std":
        model.policy.log_std.requires_grad_(False)
    obs, dists, actor = _actor(model)
    fast = model._fisher_vector_product(obs, dists, actor)
    assert fast.__qualname__.startswith("mlp_fvp_fn"), fast.__qualname__
    gauss_newton = distribution_fvp_fn(dists, actor, kl_reduction=model.kl_reduction)
    old = [_detached(d) for d in dists]
    hessian = fisher_vector_product_fn(action_kl(old, dists, kl_reduction=model.kl_reduction), actor)
    for seed in range(3):
        v = th.randn(sum(p.numel() for p in actor), generator=th.Generator().manual_seed(seed))
        reference = gauss_newton(v)
        assert reference.norm() > 1e-3
        th.testing.assert_close(fast(v), reference, rtol=1e-4, atol=1e-6 * reference.norm().item())
        th.testing.assert_close(fast(v), hessian(v), rtol=1e-4, atol=1e-5 * reference.norm().item())


def _detached(d):
    if isinstance(d, (th.distributions.Categorical, th.distributions.Bernoulli)):
        return type(d)(logits=d.logits.detach())
    return th.distributions.Normal(d.loc.detach(), d.scale.detach())


def _train_once(model: TRPO, mlp_fvp: bool, monkeypatch) -> dict:
    with monkeypatch.context() as patch:
        if not mlp_fvp:
            patch.setattr(algo, "mlp_fvp_fn", lambda *args, **kwargs: None)
        model.rollout_buffer = copy.deepcopy(model.rollout_buffer)
        th.manual_seed(1)  # the critic's minibatch shuffles
        np.random.seed(1)  # the buffer's
        model.train()
    return copy.deepcopy(model.policy.state_dict())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_train_with_mlp_fvp_equals_train_with_autograd_fvp(env_id, monkeypatch):
    model = _model(env_id, policy_kwargs=dict(log_std_init=0.4) if env_id == "Pendulum-v1" else None)
    state, optim_state, buffer = (
        copy.deepcopy(model.policy.state_dict()),
        copy.deepcopy(model.policy.optimizer.state_dict()),
        model.rollout_buffer,
    )
    results = []
    for mlp_fvp in (True, False):
        model.policy.load_state_dict(state)
        model.policy.optimizer.load_state_dict(copy.deepcopy(optim_state))
        model.rollout_buffer = buffer
        results.append((_train_once(model, mlp_fvp, monkeypatch), model.last_trust_region_result))
    (fast_params, fast_result), (slow_params, slow_result) = results
    assert fast_result.accepted and slow_result.accepted and fast_result.steps_tried == slow_result.steps_tried
    assert abs(fast_result.kl - slow_result.kl) < 1e-3 * slow_result.kl
    for name in state:
        step = slow_params[name] - state[name]
        assert step.abs().max() > 0, name  # every parameter moved (actor by the step, critic by Adam)
        th.testing.assert_close(fast_params[name], slow_params[name], rtol=0, atol=2e-3 * step.abs().max().item() + 1e-7)


class LinearExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space, features_dim: int = 8) -> None:
        super().__init__(observation_space, features_dim)
        self.linear = nn.Linear(observation_space.shape[0], features_dim)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(obs))


@pytest.mark.parametrize("case", ["features_extractor", "gelu", "output_hook"])
def test_other_policies_fall_back_to_autograd_and_train(case):
    kwargs: dict = dict(policy_kwargs=dict(net_arch=[8]))
    if case == "features_extractor":
        kwargs = dict(policy_kwargs=dict(features_extractor_class=LinearExtractor, net_arch=[8]))
    elif case == "gelu":
        kwargs = dict(policy_kwargs=dict(activation_fn=nn.GELU, net_arch=[8]))
    model = _model("Pendulum-v1", **kwargs)
    if case == "output_hook":  # a hook that changes the actor's output: its Jacobian is not the MLP's
        model.policy.action_net.register_forward_hook(lambda module, args, out: 2.0 * out)
    obs, dists, actor = _actor(model)
    fvp = model._fisher_vector_product(obs, dists, actor)
    assert fvp.__qualname__.startswith("gauss_newton_fvp_fn"), fvp.__qualname__
    v = th.randn(sum(p.numel() for p in actor))
    th.testing.assert_close(fvp(v), distribution_fvp_fn(dists, actor)(v))
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.train()
    assert model.last_trust_region_result is not None and model.last_trust_region_result.steps_tried >= 1
    assert any(not th.equal(a, p) for a, p in zip(before, model.policy.parameters(), strict=True))
