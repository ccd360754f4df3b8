"""What SB3's own test-suite expects of an algorithm, where the test is about behaviour (not A2C's budgets)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_pg_extras import GRPO, REINFORCE, TRPO, REINFORCEWithBaseline


class NoOptionsEnv(gym.Env):
    """An env whose ``reset`` takes no ``options`` (SB3 passes them only when set)."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, seed=None):  # type: ignore[override]
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), float(action), self.t >= 5, False, {}


MODELS = {
    "GRPO": lambda env, **kw: GRPO("MlpPolicy", env, group_size=2, n_steps=16, **kw),
    "REINFORCE": lambda env, **kw: REINFORCE("MlpPolicy", env, n_steps=16, **kw),
    "REINFORCE(group)": lambda env, **kw: REINFORCE("MlpPolicy", env, n_steps=16, advantage_estimator="group", group_size=2,
                                                    **kw),
    "REINFORCEWithBaseline": lambda env, **kw: REINFORCEWithBaseline("MlpPolicy", env, n_steps=16, **kw),
    "TRPO(group)": lambda env, **kw: TRPO("MlpPolicy", env, n_steps=16, batch_size=16, advantage_estimator="group",
                                          group_size=2, **kw),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MODELS))
def test_an_env_whose_reset_takes_no_options_works(name):
    model = MODELS[name](make_vec_env(NoOptionsEnv, n_envs=2, seed=0), seed=0)
    model.learn(200)
    assert model._n_updates > 0


@pytest.mark.parametrize("name", ["GRPO", "REINFORCE", "TRPO(group)"])
def test_critic_free_policies_accept_share_features_extractor_false(name):
    model = MODELS[name](make_vec_env(NoOptionsEnv, n_envs=2), policy_kwargs=dict(share_features_extractor=False))
    assert not any("value" in n for n, _ in model.policy.named_parameters())
    model.learn(64)


def test_reinforce_normalize_advantage_is_sb3s_name_for_normalize_returns(tmp_path):
    env = make_vec_env(NoOptionsEnv, n_envs=2)
    assert REINFORCE("MlpPolicy", env).normalize_advantage is True
    assert REINFORCE("MlpPolicy", env, normalize_advantage=False).normalize_returns is False
    assert REINFORCE("MlpPolicy", env, normalize_returns=False).normalize_advantage is False
    with pytest.raises(ValueError, match="pass only normalize_advantage"):
        REINFORCE("MlpPolicy", env, normalize_advantage=True, normalize_returns=False)
    # the two names train identically
    params = []
    for kwargs in (dict(normalize_advantage=False), dict(normalize_returns=False)):
        model = REINFORCE("MlpPolicy", make_vec_env(NoOptionsEnv, n_envs=2, seed=0), n_steps=16, seed=0, **kwargs)
        model.learn(128)
        params.append(th.cat([p.flatten() for p in model.policy.parameters()]))
    assert th.equal(*params)
    model.save(tmp_path / "m")
    assert REINFORCE.load(tmp_path / "m").normalize_advantage is False


@pytest.mark.parametrize("normalize_advantage", [None, True, False])
@pytest.mark.parametrize("estimator", ["group", "mc"])
def test_grpo_accepts_normalize_advantage(estimator, normalize_advantage):
    model = GRPO(
        "MlpPolicy",
        make_vec_env(NoOptionsEnv, n_envs=2, seed=0),
        group_size=2,
        n_steps=16,
        advantage_estimator=estimator,
        normalize_advantage=normalize_advantage,
        seed=0,
    )
    model.learn(128)
    assert model._n_updates > 0 and all(th.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.parametrize("name", list(MODELS))
def test_deterministic_training_with_a_seed(name):
    # SB3's test_deterministic.py::test_deterministic_training_common: same seed, same weights and predictions
    results = []
    for _ in range(2):
        model = MODELS[name](make_vec_env("CartPole-v1", n_envs=2, seed=3), seed=3)
        model.learn(300)
        obs = np.random.default_rng(0).uniform(-0.05, 0.05, (4, 4)).astype(np.float32)
        results.append((th.cat([p.detach().flatten() for p in model.policy.parameters()]), model.predict(obs)[0]))
    assert th.equal(results[0][0], results[1][0]) and np.array_equal(results[0][1], results[1][1])


class WideBoxEnv(gym.Env):
    """Actions in [-2, 2] x [0, 1] x [-1, 1]: sigma starts at half the range of each dimension."""

    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Box(np.array([-2.0, 0.0, -1.0], np.float32), np.array([2.0, 1.0, 1.0], np.float32))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2, np.float32), -float(np.square(np.clip(action, -5, 5)).sum()), self.t >= 5, False, {}


@pytest.mark.parametrize("name", ["GRPO", "REINFORCE", "REINFORCEWithBaseline"])
def test_pg_policies_start_sigma_at_half_the_action_range_and_keep_it_on_reload(name, tmp_path):
    model = MODELS[name](make_vec_env(WideBoxEnv, n_envs=2), seed=0)
    np.testing.assert_allclose(model.policy.log_std.exp().detach().numpy(), [2.0, 0.5, 1.0], rtol=1e-6)
    model.learn(64)
    model.save(tmp_path / "m.zip")
    loaded = type(model).load(tmp_path / "m.zip")
    th.testing.assert_close(loaded.policy.log_std, model.policy.log_std)  # the trained sigma, not the initial one
    assert loaded.policy_kwargs.get("log_std_init") is None
    explicit = MODELS[name](make_vec_env(WideBoxEnv, n_envs=2), policy_kwargs=dict(log_std_init=-1.0))
    np.testing.assert_allclose(explicit.policy.log_std.detach().numpy(), -1.0)  # a float keeps SB3's meaning
    sde = MODELS[name](make_vec_env(WideBoxEnv, n_envs=2), use_sde=True)
    np.testing.assert_allclose(sde.policy.log_std.detach().numpy(), 0.0)  # gSDE's noise weights: SB3's default


def test_trpo_keeps_sb3_contribs_sigma():
    model = TRPO("MlpPolicy", make_vec_env(WideBoxEnv, n_envs=2), n_steps=16, batch_size=16)
    np.testing.assert_allclose(model.policy.log_std.detach().numpy(), 0.0)  # the drop-in: SB3's sigma = 1
