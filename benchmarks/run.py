"""Side-by-side learning benchmark: our algorithms and their competitors, same run, same machine.

Usage::

    python -m benchmarks.run --quick                    # CartPole-v1 only, a few minutes
    python -m benchmarks.run                            # default suite (5 seeds)
    python -m benchmarks.run --algos trpo trpo_contrib --envs CartPole-v1 --seeds 100 101 --budget 100000

Writes to ``--out`` (default ``benchmarks/results/latest``): ``curves.csv`` (every evaluation), ``summary.csv`` and
``summary.md`` (median over seeds of the steps needed to reach the threshold, final return, env-steps/s) and one
``<env>.png`` per env with the median and inter-quartile band over seeds. With ``rliable`` installed
(``pip install -e .[bench]``) the summary adds the IQM of the final return with a 95 % bootstrap interval.
Evaluation: mean return over ``--eval-episodes`` (10) deterministic episodes every ``--eval-every`` steps.
Seeds default to 100-104, which were not used for tuning (tuning used 0-2).
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import numpy as np

THRESHOLDS = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "Pendulum-v1": -200.0,
    "MountainCar-v0": -110.0,
    "MountainCarContinuous-v0": 90.0,
    "LunarLander-v3": 200.0,
}
DEFAULT_BUDGET = {"CartPole-v1": 150_000, "Acrobot-v1": 200_000, "Pendulum-v1": 300_000, "LunarLander-v3": 500_000}
SUITE_ALGOS = [
    "trpo",
    "trpo_contrib",
    "grpo",
    "reinforce_baseline",
    "reinforce",
    "a2c",
    "ppo",
    "torchrl_grpo",
    "torchrl_reinforce_pgx",
    "torchrl_trpo",
    "torchrl_reinforce",
    "torchrl_ppo",
]
COMPETITORS = {"trpo_contrib", "a2c", "ppo", "torchrl_reinforce", "torchrl_ppo"}
QUICK_ALGOS = ["trpo", "trpo_contrib", "grpo", "reinforce_baseline", "ppo", "torchrl_grpo", "torchrl_ppo"]


def _run_one(job: tuple[str, str, int, int, int, int, float | None]) -> dict:
    name, env_id, seed, budget, eval_every, episodes, stop_at = job
    start = time.perf_counter()
    try:
        if name.startswith("torchrl_"):
            from benchmarks.torchrl_runner import run_torchrl

            curve = run_torchrl(name, env_id, seed, budget, eval_every, episodes, stop_at)
        else:
            from benchmarks.sb3_runner import run_sb3

            curve = run_sb3(name, env_id, seed, budget, eval_every, episodes, stop_at)
    except Exception as exc:  # keep the suite going; the row records the failure
        print(f"[{name} {env_id} seed={seed}] FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return {"name": name, "env": env_id, "seed": seed, "error": f"{type(exc).__name__}: {exc}"}
    elapsed = time.perf_counter() - start
    last = f"{curve.mean[-1]:.1f}" if curve.mean else "n/a"
    print(
        f"[{name} {env_id} seed={seed}] {curve.steps[-1] if curve.steps else 0} steps, last eval {last}, {elapsed:.0f}s",
        flush=True,
    )
    return {"name": name, "env": env_id, "seed": seed, "curve": curve}


def _steps_per_second(curve) -> float:
    return curve.steps[-1] / curve.train_time[-1] if curve.steps and curve.train_time[-1] > 0 else float("nan")


def _first_hit(curve, threshold: float) -> float:
    hits = [s for s, m in zip(curve.steps, curve.mean, strict=True) if m >= threshold]
    return float(hits[0]) if hits else float("nan")


def _median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) * 2 <= len(values):  # median undefined when most runs never got there
        return float("nan")
    padded = sorted(v if not math.isnan(v) else math.inf for v in values)
    return float(np.median(padded))


def summarise(results: list[dict], out: Path, stop_at_threshold: bool) -> list[dict]:
    """Write curves.csv, summary.csv, summary.md and the plots; return the summary rows."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["algo", "env", "seed", "steps", "mean_return", "std_return", "train_time_s"])
        for r in results:
            if "curve" in r:
                c = r["curve"]
                for row in zip(c.steps, c.mean, c.std, c.train_time, strict=True):
                    w.writerow([r["name"], r["env"], r["seed"], *row])
    rows = []
    for name, env_id in dict.fromkeys((r["name"], r["env"]) for r in results):
        runs = [r for r in results if r["name"] == name and r["env"] == env_id]
        curves = [r["curve"] for r in runs if "curve" in r]
        errors = [r["error"] for r in runs if "error" in r]
        threshold = THRESHOLDS.get(env_id, float("inf"))
        hits = [_first_hit(c, threshold) for c in curves]
        rows.append(
            {
                "algo": name,
                "env": env_id,
                "seeds": len(curves),
                "failed": len(errors),
                "threshold": threshold,
                "median_steps_to_threshold": _median(hits) if curves else float("nan"),
                "steps_to_threshold_per_seed": " ".join("-" if math.isnan(h) else f"{h / 1000:.0f}k" for h in hits),
                "median_final_return": float(np.median([c.mean[-1] for c in curves])) if curves else float("nan"),
                "median_best_return": float(np.median([max(c.mean) for c in curves])) if curves else float("nan"),
                "median_env_steps_per_s": float(np.median([_steps_per_second(c) for c in curves])) if curves else float("nan"),
                "error": errors[0] if errors else "",
            }
        )
    _add_rliable(rows, results)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {mp.cpu_count()} cores, Python {platform.python_version()}; "
        f"command: `python -m benchmarks.run {' '.join(sys.argv[1:])}`",
        "",
        "| algo | env | seeds | median steps to threshold | steps per seed | median final return | median best return "
        "| env-steps/s (median) |" + (" IQM final [95% CI] |" if "iqm_final" in rows[0] else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if "iqm_final" in rows[0] else ""),
    ]
    for r in rows:
        med = r["median_steps_to_threshold"]
        cell = "not reached" if math.isnan(med) else f"{med / 1000:.0f}k"
        line = (
            f"| {r['algo']} | {r['env']} (>= {r['threshold']:g}) | {r['seeds']} | {cell} | {r['steps_to_threshold_per_seed']} "
            f"| {r['median_final_return']:.1f} | {r['median_best_return']:.1f} | {r['median_env_steps_per_s']:.0f} |"
        )
        if "iqm_final" in r:
            line += f" {r['iqm_final']} |"
        lines.append(line)
    if stop_at_threshold:
        lines += ["", "Runs stopped at the first evaluation that reached the threshold: final return = return at the stop."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    _plot(results, out)
    return rows


def _add_rliable(rows: list[dict], results: list[dict]) -> None:
    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        return
    for row in rows:
        finals = [r["curve"].mean[-1] for r in results if r["name"] == row["algo"] and r["env"] == row["env"] and "curve" in r]
        if len(finals) < 2:
            row["iqm_final"] = "n/a"
            continue
        scores = {"x": np.asarray(finals, dtype=float)[:, None]}
        point, ci = rly.get_interval_estimates(scores, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=2000)
        row["iqm_final"] = f"{point['x'][0]:.1f} [{ci['x'][0][0]:.1f}, {ci['x'][1][0]:.1f}]"


def _plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for env_id in dict.fromkeys(r["env"] for r in results):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in dict.fromkeys(r["name"] for r in results if r["env"] == env_id):
            curves = [r["curve"] for r in results if r["name"] == name and r["env"] == env_id and "curve" in r]
            if not curves:
                continue
            grid = np.linspace(0, max(c.steps[-1] for c in curves), 60)
            # a run stopped early keeps its last value (it had reached the threshold)
            ys = np.stack([np.interp(grid, [0, *c.steps], [c.mean[0], *c.mean]) for c in curves])
            med, lo, hi = np.median(ys, 0), np.percentile(ys, 25, 0), np.percentile(ys, 75, 0)
            line = ax.plot(grid, med, label=f"{name} (n={len(curves)})", ls="--" if name in COMPETITORS else "-")
            ax.fill_between(grid, lo, hi, color=line[0].get_color(), alpha=0.15)
        if env_id in THRESHOLDS:
            ax.axhline(THRESHOLDS[env_id], color="grey", lw=0.8, ls=":")
        ax.set(title=f"{env_id}: median and IQR over seeds", xlabel="environment steps", ylabel="mean eval return")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{env_id}.png", dpi=110)
        plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CartPole-v1 only, 3 seeds, 60k steps, stop at 475")
    parser.add_argument("--algos", nargs="+", default=None)
    parser.add_argument("--envs", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--budget", type=int, default=None, help="env steps per run (default: per env)")
    parser.add_argument("--eval-every", type=int, default=5000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--stop-at-threshold", action="store_true", help="stop a run once its eval mean reaches the threshold")
    parser.add_argument("--jobs", type=int, default=1, help="parallel runs (>1 makes env-steps/s less comparable)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latest"))
    args = parser.parse_args(argv)
    if args.quick:
        algos = args.algos or QUICK_ALGOS
        envs, seeds = args.envs or ["CartPole-v1"], args.seeds or [100, 101, 102]
        budget, stop = args.budget or 60_000, True
    else:
        algos = args.algos or SUITE_ALGOS
        envs, seeds = args.envs or ["CartPole-v1"], args.seeds or [100, 101, 102, 103, 104]
        budget, stop = args.budget, args.stop_at_threshold
    jobs = [
        (
            a,
            e,
            s,
            budget or DEFAULT_BUDGET.get(e, 200_000),
            args.eval_every,
            args.eval_episodes,
            THRESHOLDS.get(e) if stop else None,
        )
        for e in envs
        for a in algos
        for s in seeds
    ]
    print(f"{len(jobs)} runs: algos={algos} envs={envs} seeds={seeds}", flush=True)
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            results = pool.map(_run_one, jobs, chunksize=1)
    else:
        results = [_run_one(j) for j in jobs]
    summarise(results, args.out, stop)
    print((args.out / "summary.md").read_text())
    print(f"Results in {args.out}/ (curves.csv, summary.csv, summary.md, <env>.png)")


if __name__ == "__main__":
    main()
