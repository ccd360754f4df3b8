"""Ablation of the GRPO variants (docs/maths.md#12-variants) on control tasks: each variant against plain GRPO.

Every run is SB3 ``GRPO`` built by rl-zoo3's ``ExperimentManager`` from ``zoo_configs/grpo.yml``'s entry for the env
(wrappers, normalisation and schedules exactly as ``python -m sb3_pg_extras.zoo train``) with the variants that entry
may switch on switched off (``PLAIN``: plain GRPO is the baseline) plus the variant's options,
trained for ``--budget`` env steps. Recorded per run:

* ``steps_to_threshold``: the first evaluation (every ``--eval-every`` env steps, ``--search-episodes`` deterministic
  episodes) whose mean return reached the env's threshold (CartPole-v1 475, Acrobot-v1 -100); empty when never.
  Evaluations stop once it is reached (they are the costly part of a short run);
* ``final_return``: mean return of ``--eval-episodes`` deterministic episodes after training (seeded eval env);
* ``train_return``: mean return of the last 10 training episodes (the stochastic policy) at the end.

Usage::

    python -m benchmarks.ablation                                   # both envs, every variant, seeds 0-4
    python -m benchmarks.ablation --envs Acrobot-v1 --seeds 0 1 --variants grpo dynamic_sampling

An ablation decides variants and defaults, so it runs on the tuning seeds 0-4 and refuses the report seeds (100 and
above, ``sb3_pg_extras.registry.held_out_seeds``). Resumable: rows already in ``--out`` (default
``docs/benchmarks/tuning/ablation.csv``) for the same env, variant, seed and budget are skipped, so a killed run
continues where it stopped. One process, one thread. ``--summary`` (default ``docs/benchmarks/tuning/ablation.md``)
gets the table of medians over seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script or with -m from elsewhere: the repository's benchmarks package first
    sys.path.insert(0, str(_ROOT))

from benchmarks.common import append_row, read_rows  # noqa: E402
from sb3_pg_extras.registry import TUNING_SEEDS, held_out_seeds  # noqa: E402

THRESHOLDS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
BUDGETS = {"CartPole-v1": 30_000, "Acrobot-v1": 120_000}
EVAL_EVERY = {"CartPole-v1": 2_500, "Acrobot-v1": 10_000}
SEEDS = list(TUNING_SEEDS)  # an ablation chooses variants and defaults: tuning seeds only (100 and above are refused)

#: variant name -> options added to the zoo entry (docs/maths.md#12-variants has one section per variant)
VARIANTS: dict[str, dict[str, object]] = {
    "grpo": {},
    "gspo": {"importance_sampling_level": "sequence"},
    "two_sided_clip": {"delta": 1.5},
    "dual_clip": {"clip_ratio_c": 3.0},
    "cispo": {"update_rule": "cispo", "clip_range_high": 0.28},
    "sapo": {"update_rule": "sapo"},
    "reinforce_pp": {"advantage_mode": "reinforce_pp"},
    "reinforce_pp_baseline": {"advantage_mode": "reinforce_pp_baseline"},
    "opo": {"advantage_mode": "opo", "advantage_scale": "none"},
    "gpg": {"advantage_scale": "gpg"},
    "dynamic_sampling": {"dynamic_sampling": True},
    "mask_truncated": {"mask_truncated_completions": True},
    "top_entropy_0.2": {"top_entropy_quantile": 0.2},
    "kl_k3": {"beta": 0.04},
    "kl_k3_plus": {"beta": 0.04, "kl_estimator": "k3+"},
    "kl_bias_corrected": {"beta": 0.04, "use_bias_correction_kl": True},
    "ref_mixing": {"beta": 0.04, "ref_update_interval": 32, "ref_model_mixup_alpha": 0.6},
    "remax": {"advantage_mode": "remax"},
}
#: every run starts from plain GRPO: options a zoo entry may switch on (Acrobot-v1's dynamic sampling, adopted because
#: of this ablation) are switched off unless the variant sets them
PLAIN: dict[str, object] = {"dynamic_sampling": False}
COLUMNS = ["env", "variant", "seed", "budget", "steps_to_threshold", "final_return", "train_return", "wall_s", "options"]


def run_one(
    env_id: str, variant: str, seed: int, budget: int, eval_every: int, search_episodes: int, eval_episodes: int
) -> dict[str, object]:
    """Train GRPO with the variant's options; return one CSV row."""
    import torch
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    from benchmarks.sb3_runner import config_path, load_class

    threshold = THRESHOLDS[env_id]

    class FirstHit(BaseCallback):
        """Deterministic evaluations every ``eval_every`` steps until the mean return reaches the threshold."""

        hit: int | None = None
        next_eval = eval_every

        def _on_step(self) -> bool:
            if self.hit is None and self.num_timesteps >= self.next_eval:
                self.next_eval += eval_every
                sync_envs_normalization(self.model.get_env(), self.eval_env)
                mean, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=search_episodes, warn=False)
                if mean >= threshold:
                    self.hit = int(self.num_timesteps)
            return True

    ALGOS["ablation_grpo"] = load_class("sb3_pg_extras.grpo.algo:GRPO")
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as log_folder:
        manager = ExperimentManager(
            argparse.Namespace(),
            "ablation_grpo",
            env_id,
            log_folder,
            n_timesteps=budget,
            eval_freq=-1,
            seed=seed,
            verbose=0,
            config=config_path("ours", "grpo.yml"),
            hyperparams={**PLAIN, **VARIANTS[variant]},
            device="cpu",
        )
        with contextlib.redirect_stdout(io.StringIO()):
            model, _ = manager.setup_experiment()
            eval_env = manager.create_envs(1, eval_env=True, no_log=True)
        callback = FirstHit()
        callback.eval_env = eval_env
        model.learn(budget, callback=callback)
        train_return = statistics.fmean(e["r"] for e in list(model.ep_info_buffer)[-10:])
        sync_envs_normalization(model.get_env(), eval_env)
        eval_env.seed(seed + 1000)
        final, _ = evaluate_policy(model, eval_env, n_eval_episodes=eval_episodes, deterministic=True, warn=False)
        model.get_env().close()
        eval_env.close()
    return {
        "env": env_id,
        "variant": variant,
        "seed": seed,
        "budget": budget,
        "steps_to_threshold": "" if callback.hit is None else callback.hit,
        "final_return": round(float(final), 2),
        "train_return": round(float(train_return), 2),
        "wall_s": round(time.perf_counter() - start, 1),
        "options": json.dumps(VARIANTS[variant], sort_keys=True),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarize(rows: list[dict[str, str]]) -> str:
    """Markdown table: per env and variant, median steps to the threshold (runs that never reached it count as
    infinite), how many seeds reached it, median final return; and the change against plain GRPO."""
    lines = []
    for env_id in sorted({r["env"] for r in rows}):
        env_rows = [r for r in rows if r["env"] == env_id]
        budget = env_rows[0]["budget"]
        lines += [
            f"### {env_id} (budget {int(budget):,} steps, threshold {THRESHOLDS.get(env_id, float('nan')):g})",
            "",
            "| variant | seeds | reached | median steps to threshold | median final return | mean final return |",
            "|---|---|---|---|---|---|",
        ]
        for variant in VARIANTS:
            runs = [r for r in env_rows if r["variant"] == variant]
            if not runs:
                continue
            hits = [float(r["steps_to_threshold"]) if r["steps_to_threshold"] else math.inf for r in runs]
            finals = [float(r["final_return"]) for r in runs]
            reached = sum(math.isfinite(h) for h in hits)
            med = _median(hits)
            steps = f"{med:,.0f}" if math.isfinite(med) else "not reached"
            lines.append(
                f"| {variant} | {len(runs)} | {reached}/{len(runs)} | {steps} | {_median(finals):.1f} | "
                f"{statistics.fmean(finals):.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(THRESHOLDS), choices=list(THRESHOLDS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    parser.add_argument("--budget", type=int, default=None, help="env steps per run (default: 30k CartPole, 120k Acrobot)")
    parser.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations (2.5k / 10k)")
    parser.add_argument("--search-episodes", type=int, default=3, help="episodes per evaluation before the threshold")
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes of the final evaluation")
    parser.add_argument("--out", type=Path, default=_ROOT / "docs" / "benchmarks" / "tuning" / "ablation.csv")
    parser.add_argument("--summary", type=Path, default=_ROOT / "docs" / "benchmarks" / "tuning" / "ablation.md")
    args = parser.parse_args(argv)
    if held_out_seeds(args.seeds):
        parser.error(f"seeds {held_out_seeds(args.seeds)}: 100 and above are held out for the report: ablate on 0-4")

    done = {(r["env"], r["variant"], r["seed"], r["budget"]) for r in read_rows(args.out)}
    for env_id in args.envs:
        budget = args.budget or BUDGETS[env_id]
        for seed in args.seeds:  # seed-major: an interrupted grid still covers every variant
            for variant in args.variants:
                if (env_id, variant, str(seed), str(budget)) in done:
                    continue
                every = args.eval_every or EVAL_EVERY[env_id]
                row = run_one(env_id, variant, seed, budget, every, args.search_episodes, args.eval_episodes)
                append_row(args.out, row, COLUMNS)
                print(", ".join(f"{k}={row[k]}" for k in COLUMNS[:-1]), flush=True)
    table = summarize(read_rows(args.out))
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(
        "# GRPO variants: ablation on control tasks\n\nGenerated by `python -m benchmarks.ablation` from `ablation.csv` "
        "(SB3 `GRPO`, `zoo_configs/grpo.yml` plus each variant's options; steps to threshold: first deterministic "
        "evaluation, 3 episodes, at or above the threshold; final return: 5 deterministic episodes). Medians over seeds."
        "\n\n" + table
    )
    print(table)


if __name__ == "__main__":
    main()
