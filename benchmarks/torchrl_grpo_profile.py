"""Where the TorchRL GRPO pipeline spends its time: a cProfile of ``benchmarks/torchrl_runner.py``'s ``torchrl_grpo``.

One run of the tuned CartPole-v1 entry (no evaluation), profiled; each row is the cumulative time of one function as a
share of the run. Rows nest: the collector's rollout holds the env step and the policy's forward; the env step holds
our ``GroupedEnv`` transform and gymnasium's vector env. Our code is the ``torchrl_pg_extras`` rows; the rest is
TorchRL, tensordict, gymnasium and torch. Shares, not seconds, are the result (the machine is shared).

Usage::

    python -m benchmarks.torchrl_grpo_profile            # writes docs/benchmarks/torchrl_grpo_profile.md
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import warnings
from pathlib import Path

import torch

from benchmarks.torchrl_runner import run_torchrl

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "torchrl_grpo_profile.md"

#: (label, file suffix, function name) of the rows, outermost first.
ROWS = (
    ("collector rollout (TorchRL `Collector`)", "torchrl/collectors/_single.py", "rollout"),
    ("  env step (TorchRL `step_and_maybe_reset`)", "torchrl/envs/common.py", "step_and_maybe_reset"),
    ("    gymnasium `SyncVectorEnv.step`", "gymnasium/vector/sync_vector_env.py", "step"),
    ("    `GroupedEnv` labels on step (ours)", "torchrl_pg_extras/envs.py", "_step"),
    ("    `GroupedEnv` seeded partial resets (ours, with the sub-envs' reset)", "torchrl_pg_extras/envs.py", "_reset"),
    ("  policy forward in the rollout (tensordict `ProbabilisticTensorDictSequential`)", "tensordict/nn/probabilistic.py",
     "forward"),
    ("`GroupBatcher.add`: whole groups out of the batches (ours)", "torchrl_pg_extras/collectors.py", "add"),
    ("`GroupRelativeAdvantage` (ours)", "torchrl_pg_extras/value.py", "forward"),
    ("`GRPOLoss` forward (ours)", "torchrl_pg_extras/grpo.py", "forward"),
    ("backward + clip + Adam step", "benchmarks/torchrl_runner.py", "_clip_grad_and_step"),
)  # fmt: skip


def _cumtime(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of ``name`` in the file ending with ``suffix`` (the outermost one where several nest)."""
    return max((v[3] for (file, _, func), v in stats.stats.items() if func == name and file.endswith(suffix)), default=0.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    run_torchrl("torchrl_grpo", "CartPole-v1", 0, 5_000, 10**9)  # warm-up (imports, first allocations)
    profiler = cProfile.Profile()
    profiler.enable()
    curve = run_torchrl("torchrl_grpo", "CartPole-v1", 0, args.frames, 10**9)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = _cumtime(stats, "benchmarks/torchrl_runner.py", "run_torchrl")
    lines = [
        "# Where the TorchRL GRPO pipeline spends its time (CartPole-v1, `torchrl_configs/grpo.yaml`)",
        "",
        f"{curve.steps[-1]} env steps under cProfile, seed 0, one torch thread; {platform.machine()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}. `python -m benchmarks.torchrl_grpo_profile`. Shares of "
        "the profiled run; indented rows are inside the row above.",
        "",
        "| part | share of the run |",
        "|---|---|",
    ]
    lines += [f"| {label.strip()}{' (inside the above)' if label.startswith(' ') else ''} | "
              f"{100 * _cumtime(stats, suffix, name) / total:.0f} % |" for label, suffix, name in ROWS]  # fmt: skip
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
