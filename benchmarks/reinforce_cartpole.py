"""Env steps REINFORCE / REINFORCEWithBaseline need to reach a mean eval return of 475 on CartPole-v1 (not a test).

Usage::

    python tests/sb3/bench_reinforce_cartpole.py --algo reinforce --seeds 0 1 2 [--budget 150000]

Evaluation: every ``--eval-freq`` steps, 10 deterministic episodes (a 10-env DummyVecEnv, SB3's evaluate_policy).
"""

from __future__ import annotations

import argparse
import json
import time

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_pg_extras import REINFORCE, REINFORCEWithBaseline

HYPERPARAMS = {
    "reinforce": dict(
        n_envs=8, n_steps=256, learning_rate=1e-2, gamma=0.99, normalize_returns=True, max_grad_norm=1.0, ent_coef=0.0
    ),
    "reinforce_baseline": dict(
        n_envs=8,
        n_steps=256,
        learning_rate=1e-2,
        vf_learning_rate=3e-3,
        n_critic_updates=5,
        batch_size=256,
        gamma=0.99,
        normalize_advantage=True,
        max_grad_norm=1.0,
        ent_coef=0.0,
    ),
}


class StopAtThreshold(BaseCallback):
    def __init__(self, eval_env, eval_freq: int, threshold: float, n_eval_episodes: int = 10) -> None:
        super().__init__()
        self.eval_env, self.eval_freq, self.threshold, self.n_eval = eval_env, eval_freq, threshold, n_eval_episodes
        self.next_eval = eval_freq
        self.history: list[tuple[int, float]] = []
        self.reached: int | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps < self.next_eval:
            return True
        self.next_eval += self.eval_freq
        mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_eval, deterministic=True)
        self.history.append((self.num_timesteps, float(mean)))
        if mean >= self.threshold:
            self.reached = self.num_timesteps
            return False
        return True


def run(algo: str, seed: int, budget: int, eval_freq: int, overrides: dict) -> dict:
    th.set_num_threads(1)
    params = dict(HYPERPARAMS[algo], **overrides)
    n_envs = params.pop("n_envs")
    env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)
    eval_env = make_vec_env("CartPole-v1", n_envs=10, seed=seed + 1000)
    cls = REINFORCE if algo == "reinforce" else REINFORCEWithBaseline
    model = cls("MlpPolicy", env, seed=seed, **params)
    cb = StopAtThreshold(eval_env, eval_freq, 475.0)
    start = time.time()
    model.learn(budget, callback=cb)
    return dict(algo=algo, seed=seed, reached=cb.reached, seconds=round(time.time() - start, 1), history=cb.history[-5:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", choices=sorted(HYPERPARAMS), default="reinforce")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=150_000)
    parser.add_argument("--eval-freq", type=int, default=5_000)
    parser.add_argument("--set", default="{}", help="JSON dict of hyperparameter overrides")
    args = parser.parse_args()
    for seed in args.seeds:
        print(json.dumps(run(args.algo, seed, args.budget, args.eval_freq, json.loads(args.set))), flush=True)
