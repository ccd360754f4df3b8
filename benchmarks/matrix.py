"""Estimators x update rules on CartPole-v1: one short learning run per cell and seed, SB3 and TorchRL adapters.

Usage::

    python -m benchmarks.matrix                       # writes docs/benchmarks/matrix.csv (resumes: cached rows are kept)
    python -m benchmarks.matrix --seeds 100 --budget 20000

Each cell trains from scratch for ``--budget`` env steps with hand-set, untuned hyperparameters (the same for every
seed), evaluating 10 deterministic episodes every 5k steps; the CSV holds, per run, the steps at which the evaluation
first reached 475 (empty if never) and the final evaluation return. ``python -m benchmarks.readme`` turns it into the
README's matrix table.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "matrix.csv"
FIELDS = ["adapter", "rule", "estimator", "seed", "budget", "steps_to_475", "final_return", "train_seconds"]


def _sb3_cells() -> dict[tuple[str, str], Callable[[Any, int], Any]]:
    from sb3_pg_extras import GRPO, REINFORCE, TRPO, REINFORCEWithBaseline

    group = dict(advantage_estimator="group", group_size=8, advantage_mode="return_to_go", gamma=1.0)
    return {
        ("pg", "mc"): lambda env, s: REINFORCE("MlpPolicy", env, n_steps=256, learning_rate=1e-2, seed=s),
        ("pg", "baseline"): lambda env, s: REINFORCEWithBaseline("MlpPolicy", env, n_steps=256, learning_rate=1e-2,
                                                                 vf_learning_rate=3e-3, seed=s),
        ("pg", "group"): lambda env, s: REINFORCE("MlpPolicy", env, n_steps=64, learning_rate=1e-2, seed=s, **group),
        ("ppo_clip", "mc"): lambda env, s: GRPO("MlpPolicy", env, n_steps=16, advantage_estimator="mc", gamma=0.99, seed=s),
        ("ppo_clip", "group"): lambda env, s: GRPO("MlpPolicy", env, n_steps=16, advantage_mode="return_to_go", seed=s),
        ("trust_region", "gae"): lambda env, s: TRPO("MlpPolicy", env, n_steps=512, seed=s),
        ("trust_region", "mc"): lambda env, s: TRPO("MlpPolicy", env, n_steps=512, advantage_estimator="mc", seed=s),
        ("trust_region", "group"): lambda env, s: TRPO("MlpPolicy", env, n_steps=64, seed=s, **group),
    }  # fmt: skip


def run_sb3(rule: str, estimator: str, seed: int, budget: int) -> dict[str, Any]:
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)

    class Evaluate(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next, self.hit, self.last, self.eval_time = 5000, None, float("nan"), 0.0
            self.eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=seed + 1000)

        def evaluate(self) -> None:
            start = time.perf_counter()
            self.last = float(evaluate_policy(self.model, self.eval_env, n_eval_episodes=10, deterministic=True)[0])
            self.eval_time += time.perf_counter() - start
            if self.hit is None and self.last >= 475:
                self.hit = self.num_timesteps

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += 5000
                self.evaluate()
            return True

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = _sb3_cells()[(rule, estimator)](env, seed)
    callback = Evaluate()
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    callback.evaluate()
    seconds = time.perf_counter() - start - callback.eval_time
    return {"steps_to_475": callback.hit or "", "final_return": round(callback.last, 1), "train_seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    parser.add_argument("--budget", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    if args.out.exists():
        with args.out.open() as f:
            rows = list(csv.DictReader(f))
    done = {(r["adapter"], r["rule"], r["estimator"], int(r["seed"]), int(r["budget"])) for r in rows}
    for rule, estimator in _sb3_cells():
        for seed in args.seeds:
            key = ("sb3", rule, estimator, seed, args.budget)
            if key in done:
                continue
            result = run_sb3(rule, estimator, seed, args.budget)
            rows.append(dict(zip(FIELDS[:5], key, strict=True)) | result)
            print(rows[-1], flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("w", newline="") as f:
                writer = csv.DictWriter(f, FIELDS)
                writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
