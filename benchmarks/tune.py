"""Compare hand-picked hyperparameter overrides of one config on the tuning seeds 0-4 (never the grid's 100-104).

Each candidate is ``NAME=JSON``: the overrides applied on top of the algorithm's entry for the env (``{}`` is the
shipped entry): ``zoo_configs/<algo>.yml`` for the SB3 algorithms, ``torchrl_configs/`` (or the peers' table in
``benchmarks/torchrl_runner.py``) for the TorchRL pipelines (``--algo torchrl_grpo``, ...). Every run is one row of
``--out`` as it finishes, so a stopped search resumes; the summary gives, per candidate, the final returns per seed and
their median. Complements ``python -m sb3_pg_extras.zoo optimize --trial-seeds ...`` (an Optuna search) when a few
candidates on five seeds say more.

Example::

    python -m benchmarks.tune --algo reinforce_baseline --env Acrobot-v1 \\
        base='{}' ent0.01='{"ent_coef": 0.01}' --out docs/benchmarks/tuning/reinforce_baseline_Acrobot-v1.csv
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from benchmarks.common import append_row, read_rows
from benchmarks.run import ENVS, EVAL_EVERY, MUJOCO_ENVS
from benchmarks.sb3_runner import SB3_ALGOS, run_sb3
from benchmarks.torchrl_runner import TORCHRL_ALGOS, run_torchrl
from sb3_pg_extras.registry import TUNING_SEEDS, held_out_seeds

FIELDS = ["name", "overrides", "seed", "final", "curve", "wall_s"]


def parse_candidate(text: str) -> tuple[str, dict]:
    name, sep, overrides = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"candidate {text!r}: expected NAME=JSON, e.g. ent='{{\"ent_coef\": 0.01}}'")
    try:
        values = json.loads(overrides)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"candidate {name!r}: overrides are not JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise argparse.ArgumentTypeError(f"candidate {name!r}: overrides must be a JSON object, got {overrides!r}")
    return name, values


def summarize(rows: list[dict[str, str]]) -> str:
    by_name: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    lines = ["| candidate | overrides | final return per seed | median |", "|---|---|---|---|"]
    for name, runs in by_name.items():
        runs.sort(key=lambda r: int(r["seed"]))
        finals = [float(r["final"]) for r in runs]
        per_seed = " ".join(f"{x:.1f}" for x in finals)
        lines.append(f"| {name} | `{runs[0]['overrides']}` | {per_seed} | {statistics.median(finals):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", required=True, choices=sorted({*SB3_ALGOS, *TORCHRL_ALGOS}))
    parser.add_argument("--env", required=True)
    parser.add_argument("candidates", nargs="+", type=parse_candidate, help="NAME=JSON overrides")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(TUNING_SEEDS))
    parser.add_argument("--budget", type=int, default=None, help="env steps (default: the grid's budget for the env)")
    parser.add_argument(
        "--eval-every", type=int, default=EVAL_EVERY, help="env steps between evaluations (the final one is always made)"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if held_out_seeds(args.seeds):
        parser.error(f"seeds {held_out_seeds(args.seeds)}: 100 and above are held out for the report: tune on 0-4")
    budget = args.budget or {**ENVS, **MUJOCO_ENVS}.get(args.env)
    if budget is None:
        parser.error(f"no default budget for {args.env}: pass --budget")
    done = {(r["name"], int(r["seed"])) for r in read_rows(args.out)}
    for name, overrides in args.candidates:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            start = time.perf_counter()
            if args.algo in TORCHRL_ALGOS:
                curve = run_torchrl(args.algo, args.env, seed, budget, args.eval_every, hyperparams=overrides or None)
            else:
                curve = run_sb3(args.algo, args.env, seed, budget, args.eval_every, hyperparams=overrides or None)
            row = {
                "name": name,
                "overrides": json.dumps(overrides, sort_keys=True),
                "seed": seed,
                "final": curve.mean[-1],
                "curve": json.dumps([round(x, 1) for x in curve.mean]),
                "wall_s": round(time.perf_counter() - start, 1),
            }
            append_row(args.out, row, FIELDS)
            print(f"{name} seed {seed}: final {row['final']:.1f}", flush=True)
    print(summarize(read_rows(args.out)))


if __name__ == "__main__":
    main()
