"""SB3 GRPO learns: a contextual bandit (one-step episodes, the group shares the context) and CartPole-v1."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_pg_extras import GRPO

th.set_num_threads(1)


class ContextBandit(gym.Env):
    """One-step episodes: observe a one-hot context ``c`` (drawn from the reset seed), reward 1 for action ``c``."""

    def __init__(self, n: int = 4):
        self.n = n
        self.observation_space = spaces.Box(0, 1, (n,), np.float32)
        self.action_space = spaces.Discrete(n)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.context = int(self.np_random.integers(self.n))
        return np.eye(self.n, dtype=np.float32)[self.context], {}

    def step(self, action):
        return np.zeros(self.n, np.float32), float(int(action) == self.context), True, False, {}


def test_solves_contextual_bandit():
    env = make_vec_env(ContextBandit, n_envs=16)
    model = GRPO(
        "MlpPolicy",
        env,
        group_size=8,
        n_steps=4,
        batch_size=None,
        n_epochs=4,
        learning_rate=3e-3,
        seed=0,
        policy_kwargs=dict(net_arch=[32]),
    )
    before, _ = evaluate_policy(model, make_vec_env(ContextBandit, n_envs=1, seed=1), n_eval_episodes=40)
    model.learn(3_000)
    after, _ = evaluate_policy(model, make_vec_env(ContextBandit, n_envs=1, seed=1), n_eval_episodes=40)
    assert before < 0.6 and after >= 0.95


def test_cartpole_reaches_195():
    model = GRPO(
        "MlpPolicy", "CartPole-v1", n_envs=8, group_size=8, n_steps=1, batch_size=None, n_epochs=4, learning_rate=1e-3, seed=0
    )
    model.learn(25_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=1), n_eval_episodes=10)
    assert mean >= 195
