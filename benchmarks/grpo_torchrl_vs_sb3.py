"""TorchRL GRPO versus SB3 GRPO and SB3 PPO on CartPole-v1: frames to 475 and env-steps/s, same run, same machine.

* TorchRL GRPO: ``benchmarks/torchrl_runner.py``'s ``torchrl_grpo`` pipeline with its tuned ``DEFAULTS``
  (:class:`~torchrl_pg_extras.GroupedEnv` + :class:`~torchrl_pg_extras.GroupBatcher` + ``GRPOLoss``);
* SB3 GRPO: ``sb3_pg_extras.GRPO`` built through its public constructor from ``zoo_configs/grpo.yml``'s CartPole
  section (``make_vec_env`` with that ``n_envs``);
* SB3 PPO: ``stable_baselines3.PPO`` with rl_zoo3's ``hyperparams/ppo.yml`` CartPole section (``lin_`` schedules).

Every run trains until its deterministic evaluation (mean of ``--eval-episodes`` episodes, every ``--eval-every`` env
steps, on a separate env seeded ``seed + 10000``) reaches 475 or the budget is spent. Env steps are every step the
envs took; env-steps/s is env steps over training wall time (evaluation excluded). Targets (issue 9): TorchRL GRPO's
median frames-to-475 <= SB3 GRPO's, its env-steps/s >= SB3 GRPO's and >= 3x SB3 PPO's.

Usage::

    python -m benchmarks.grpo_torchrl_vs_sb3          # seeds 100-104, writes docs/benchmarks/grpo_torchrl_vs_sb3.*
    python -m benchmarks.grpo_torchrl_vs_sb3 --seeds 0 1 --ppo-budget 20000
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # torchrl's wheel installs its own top-level ``benchmarks``: the repository's first
    sys.path.insert(0, str(_ROOT))

from benchmarks.common import Curve  # noqa: E402
from benchmarks.torchrl_runner import config_for, run_torchrl  # noqa: E402
from sb3_pg_extras.registry import REPORT_SEEDS  # noqa: E402

ENV_ID = "CartPole-v1"
THRESHOLD = 475.0
_ZOO_ONLY = ("n_envs", "n_timesteps", "policy", "normalize", "env_wrapper", "frame_stack", "callback", "vec_env_wrapper")


def _schedule(value: Any) -> Any:
    """rl_zoo3's ``lin_<x>`` strings as SB3 schedules (``progress_remaining * x``); anything else unchanged."""
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


def zoo_section(path: Path, env_id: str = ENV_ID) -> tuple[int, str, dict[str, Any]]:
    """``(n_envs, policy, constructor kwargs)`` of one env's section of an RL Zoo YAML file."""
    section = dict(yaml.safe_load(path.read_text())[env_id])
    n_envs, policy = int(section.get("n_envs", 1)), section.get("policy", "MlpPolicy")
    kwargs = {k: _schedule(v) for k, v in section.items() if k not in _ZOO_ONLY}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"dict": dict, "nn": torch.nn, "torch": torch})
    return n_envs, policy, kwargs


def _ppo_config() -> Path:
    import rl_zoo3

    return Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"


def run_sb3(make_model: Callable[[int], Any], seed: int, budget: int, eval_every: int, n_eval: int) -> Curve:
    """Train ``make_model(seed)`` until 475 or ``budget``; evaluate every ``eval_every`` steps, off the training clock."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    curve = Curve()
    eval_env = make_vec_env(ENV_ID, n_envs=1, seed=seed + 10_000)

    class EvalAndStop(BaseCallback):
        def _on_training_start(self) -> None:
            self.start, self.eval_time, self.next_eval = time.perf_counter(), 0.0, eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next_eval:
                return True
            eval_start = time.perf_counter()
            mean, std = evaluate_policy(self.model, eval_env, n_eval_episodes=n_eval, deterministic=True)
            curve.steps.append(int(self.num_timesteps))
            curve.mean.append(float(mean))
            curve.std.append(float(std))
            curve.train_time.append(eval_start - self.start - self.eval_time)
            self.eval_time += time.perf_counter() - eval_start
            self.next_eval = (self.num_timesteps // eval_every + 1) * eval_every
            return mean < THRESHOLD

    model = make_model(seed)
    model.learn(budget, callback=EvalAndStop())
    eval_env.close()
    model.env.close()
    return curve


def sb3_grpo(seed: int):
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_pg_extras import GRPO

    n_envs, policy, kwargs = zoo_section(_ROOT / "zoo_configs" / "grpo.yml")
    return GRPO(policy, make_vec_env(ENV_ID, n_envs=n_envs, seed=seed), seed=seed, verbose=0, **kwargs)


def sb3_ppo(seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    n_envs, policy, kwargs = zoo_section(_ppo_config())
    return PPO(policy, make_vec_env(ENV_ID, n_envs=n_envs, seed=seed), seed=seed, verbose=0, **kwargs)


def summarise(name: str, seed: int, curve: Curve) -> dict[str, Any]:
    hit = next((s for s, m in zip(curve.steps, curve.mean, strict=True) if m >= THRESHOLD), None)
    steps, train = (curve.steps[-1], curve.train_time[-1]) if curve.steps else (0, float("nan"))
    return {
        "run": name,
        "seed": seed,
        "frames_to_475": hit if hit is not None else "",
        "final_eval": round(curve.mean[-1], 1) if curve.mean else "",
        "env_steps": steps,
        "train_time_s": round(train, 2),
        "env_steps_per_s": round(steps / train) if train and train > 0 else "",
    }


def _median(rows: list[dict[str, Any]], key: str, missing: float = math.inf) -> float:
    values = [float(r[key]) if r[key] != "" else missing for r in rows]
    return statistics.median(values) if values else math.nan


def write_results(rows: list[dict[str, Any]], out: Path, args: argparse.Namespace, wall: float) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    by_run = {name: [r for r in rows if r["run"] == name] for name in dict.fromkeys(r["run"] for r in rows)}
    med = {name: (_median(rs, "frames_to_475"), _median(rs, "env_steps_per_s", math.nan)) for name, rs in by_run.items()}
    lines = [
        f"# TorchRL GRPO vs SB3 GRPO vs SB3 PPO on {ENV_ID}",
        "",
        f"Seeds {args.seeds}; deterministic evaluation of {args.eval_episodes} episodes every {args.eval_every} env steps; "
        f"budgets: GRPO {args.budget}, PPO {args.ppo_budget} env steps; one process, torch threads 1; "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}; "
        f"wall {wall:.0f} s. `python -m benchmarks.grpo_torchrl_vs_sb3`",
        "",
        "| run | median frames to 475 | hits | median env-steps/s |",
        "|---|---|---|---|",
    ]
    for name, rs in by_run.items():
        hits = sum(r["frames_to_475"] != "" for r in rs)
        frames = "not reached" if math.isinf(med[name][0]) else f"{med[name][0]:.0f}"
        lines.append(f"| {name} | {frames} | {hits}/{len(rs)} | {med[name][1]:.0f} |")
    t, g, p = med.get("torchrl_grpo"), med.get("sb3_grpo"), med.get("sb3_ppo")
    lines += ["", "Targets:", ""]
    if t and g:
        lines.append(
            f"- frames to 475, TorchRL GRPO <= SB3 GRPO: {t[0]:.0f} vs {g[0]:.0f}: {'met' if t[0] <= g[0] else 'missed'}"
        )
        lines.append(
            f"- env-steps/s, TorchRL GRPO >= SB3 GRPO: {t[1]:.0f} vs {g[1]:.0f}: {'met' if t[1] >= g[1] else 'missed'}"
        )
    if t and p:
        lines.append(
            f"- env-steps/s, TorchRL GRPO >= 3x SB3 PPO: {t[1]:.0f} vs 3 x {p[1]:.0f} = {3 * p[1]:.0f}: "
            f"{'met' if t[1] >= 3 * p[1] else 'missed'}"
        )
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(REPORT_SEEDS), help="default: the report seeds")
    parser.add_argument("--budget", type=int, default=100_000, help="GRPO env-step budget (both frameworks)")
    parser.add_argument("--ppo-budget", type=int, default=60_000)
    parser.add_argument("--eval-every", type=int, default=2_500)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--runs", nargs="+", default=["torchrl_grpo", "sb3_grpo", "sb3_ppo"])
    parser.add_argument("--out", default=str(_ROOT / "docs" / "benchmarks" / "grpo_torchrl_vs_sb3"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"TorchRL GRPO settings: {config_for('torchrl_grpo', ENV_ID)}", flush=True)
    rows, start = [], time.perf_counter()
    for seed in args.seeds:  # interleaved, so that a change of machine load hits every run alike
        for name in args.runs:
            if name == "torchrl_grpo":
                curve = run_torchrl(name, ENV_ID, seed, args.budget, args.eval_every, args.eval_episodes, THRESHOLD)
            elif name == "sb3_grpo":
                curve = run_sb3(sb3_grpo, seed, args.budget, args.eval_every, args.eval_episodes)
            elif name == "sb3_ppo":
                curve = run_sb3(sb3_ppo, seed, args.ppo_budget, args.eval_every, args.eval_episodes)
            else:
                raise SystemExit(f"unknown run {name!r}: use torchrl_grpo, sb3_grpo, sb3_ppo")
            rows.append(summarise(name, seed, curve))
            print(rows[-1], flush=True)
    print(write_results(rows, Path(args.out), args, time.perf_counter() - start))


if __name__ == "__main__":
    main()
