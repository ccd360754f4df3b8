"""Measure the group-relative signal of a critic-free run: how often a group has zero spread.

A GRPO group whose members all return the same (every MountainCar member at -200) has advantage exactly 0: no
gradient. This runs the zoo entry of ``--algo`` on ``--env`` (tuning seeds only) and records, per update, SB3's
``rollout/frac_zero_std_groups`` (the share of groups, or of (group, step) cells for ``return_to_go``, with zero
spread), then summarises each run: the mean share, the share of updates in which *every* group had zero spread, and
the final return. Rows go to ``--out`` (CSV, resumable) and the table is printed.

For an algorithm without groups (``--algo reinforce``, ``reinforce_baseline``) the same run records the signal its
returns carry instead: the highest ``rollout/ep_rew_mean`` (SB3's mean over the last 100 training episodes) of any
update. On MountainCar-v0 a value of -200 means that no training episode reached the flag, so every return is the
same -200 and the only return differences are those of the discount over time.

Usage::

    python -m benchmarks.probes.group_signal --algo grpo --env MountainCar-v0 --seeds 0 1 2 3 4 \\
        --out docs/benchmarks/tuning/group_signal.csv
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.common import append_row, read_rows
from benchmarks.run import ENVS, EVAL_EVERY
from benchmarks.sb3_runner import run_sb3
from sb3_pg_extras.registry import TUNING_SEEDS, held_out_seeds

FIELDS = ["algo", "env", "seed", "updates", "mean_frac_zero_std", "frac_updates_all_zero", "final"]
EPISODE_FIELDS = ["algo", "env", "seed", "updates", "max_ep_rew_mean", "final"]
KEY = "rollout/frac_zero_std_groups"
EPISODE_KEY = "rollout/ep_rew_mean"


def measure(algo: str, env_id: str, seed: int, budget: int) -> dict[str, object]:
    logged: list[dict[str, float]] = []
    curve = run_sb3(algo, env_id, seed, budget, EVAL_EVERY, logged=logged)
    shares = [row[KEY] for row in logged if KEY in row]
    if not shares:  # no groups: the best running mean of the training episodes' returns
        means = [row[EPISODE_KEY] for row in logged if EPISODE_KEY in row]
        return {
            "algo": algo,
            "env": env_id,
            "seed": seed,
            "updates": len(means),
            "max_ep_rew_mean": round(max(means), 2) if means else "",
            "final": round(curve.mean[-1], 1),
        }
    return {
        "algo": algo,
        "env": env_id,
        "seed": seed,
        "updates": len(shares),
        "mean_frac_zero_std": round(statistics.fmean(shares), 4) if shares else "",
        "frac_updates_all_zero": round(sum(s == 1.0 for s in shares) / len(shares), 4) if shares else "",
        "final": round(curve.mean[-1], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="grpo")
    parser.add_argument("--env", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(TUNING_SEEDS))
    parser.add_argument("--budget", type=int, default=None, help="env steps (default: the grid's budget)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if held_out_seeds(args.seeds):
        parser.error(f"seeds {held_out_seeds(args.seeds)}: 100 and above are held out for the report: use 0-4")
    done = {(r["algo"], r["env"], int(r["seed"])) for r in read_rows(args.out)}
    for env_id in args.env:
        for seed in args.seeds:
            if (args.algo, env_id, seed) not in done:
                row = measure(args.algo, env_id, seed, args.budget or ENVS[env_id])
                append_row(args.out, row, FIELDS if "mean_frac_zero_std" in row else EPISODE_FIELDS)
                print(row, flush=True)
    for r in read_rows(args.out):
        print(r)


if __name__ == "__main__":
    main()
