"""Write the README's result sections from the committed benchmark files (no hand-typed numbers).

Usage::

    python -m benchmarks.readme          # rewrite the generated sections of README.md
    python -m benchmarks.readme --check  # exit 1 if README.md is not what the files give (a test runs this)

A generated section sits between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``:

* ``matrix``: estimators x update rules on CartPole-v1, from ``docs/benchmarks/matrix.csv`` (``benchmarks.matrix``);
* ``benchmark``: the benchmark grid's headline (across-env IQM table with CIs, GRPO-vs-PPO verdict per env, link to
  ``docs/benchmarks.md``), from ``docs/benchmarks/summary.md``, which ``python -m benchmarks.run`` writes from the run
  files in ``docs/benchmarks/grid/`` together with the page (rerun it, then this, after new runs);
* ``speed``: the speed ratios, from ``docs/benchmarks/speed.md``, which this module writes first from the pages the
  speed scripts write (``docs/benchmarks/trpo_speed.md``, ``docs/benchmarks/grpo_torchrl_vs_sb3.md``).

A section whose file does not exist yet says so.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs" / "benchmarks"

RULES = ("pg", "ppo_clip", "trust_region")
ESTIMATORS = ("mc", "baseline", "gae", "group")
# (rule, estimator in matrix.csv) -> the class that ran, with the advantage it computed where the name hides it
SB3_CLASS = {
    ("pg", "mc"): "REINFORCE (standardised G_t)",
    ("pg", "baseline"): "REINFORCEWithBaseline (G_t - V)",
    ("pg", "group"): 'REINFORCE(advantage_estimator="group")',
    ("ppo_clip", "mc"): 'GRPO(advantage_estimator="mc") (standardised G_t)',
    ("ppo_clip", "group"): "GRPO",
    ("trust_region", "gae"): "TRPO",
    ("trust_region", "mc"): 'TRPO(advantage_estimator="mc") (G_t - V)',
    ("trust_region", "group"): 'TRPO(advantage_estimator="group")',
}
# the column a cell belongs in by the advantage that ran: TRPO's "mc" estimator subtracts its critic, a learned baseline
COLUMN = {("trust_region", "mc"): "baseline"}
PEERS = {("pg", "gae"): "SB3 A2C", ("ppo_clip", "baseline"): "SB3 PPO", ("ppo_clip", "gae"): "SB3 PPO"}


def _k(steps: float) -> str:
    return f"{steps / 1000:.0f}k"


def matrix_section() -> str:
    path = DOCS / "matrix.csv"
    if not path.exists():
        return "_Not run yet: `python -m benchmarks.matrix`._"
    with path.open() as f:
        rows = list(csv.DictReader(f))
    cells: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    ran: dict[tuple[str, str], str] = {}  # (rule, column) -> the estimator of matrix.csv shown there
    for row in rows:
        column = COLUMN.get((row["rule"], row["estimator"]), row["estimator"])
        ran[(row["rule"], column)] = row["estimator"]
        cells.setdefault((row["adapter"], row["rule"], column), []).append(row)
    budgets = sorted({int(r["budget"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    lines = [
        f"CartPole-v1, {len(seeds)} seeds ({', '.join(map(str, seeds))}), {', '.join(_k(b) for b in budgets)} env steps, "
        "untuned hand-set hyperparameters (`benchmarks/matrix.py`). Cell: median steps to an evaluation return of 475 "
        "(runs that reached it / runs), median final return.",
        "",
        "| SB3 | " + " | ".join(f"`{e}`" for e in ESTIMATORS) + " |",
        "|---|" + "---|" * len(ESTIMATORS),
    ]
    for rule in RULES:
        out = [f"`{rule}`"]
        for estimator in ESTIMATORS:
            runs = cells.get(("sb3", rule, estimator))
            if not runs:
                out.append(f"({PEERS[(rule, estimator)]})" if (rule, estimator) in PEERS else "")
                continue
            hits = [float(r["steps_to_475"]) for r in runs if r["steps_to_475"]]
            finals = [float(r["final_return"]) for r in runs]
            reached = _k(statistics.median(hits)) if len(hits) * 2 > len(runs) else "not reached"
            label = SB3_CLASS[(rule, ran[(rule, estimator)])]
            out.append(f"{label}: {reached} ({len(hits)}/{len(runs)}), final {statistics.median(finals):.0f}")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def _file_section(name: str, command: str) -> Callable[[], str]:
    def section() -> str:
        path = DOCS / name
        if not path.exists():
            return f"_Not run yet: `{command}`._"
        return path.read_text().strip()

    return section


# docs/benchmarks/speed.md: the pages the speed scripts write, in this order (each script writes its own)
SPEED_PARTS = (
    ("trpo_speed.md", "python -m benchmarks.trpo_update_speed"),
    ("trpo_speed_hopper.md", "python -m benchmarks.trpo_update_speed --env Hopper-v5 --out docs/benchmarks/trpo_speed_hopper"),
    ("grpo_torchrl_vs_sb3.md", "python -m benchmarks.grpo_torchrl_vs_sb3"),
    ("collection_limit.md", "python -m benchmarks.collection_limit"),
)


def speed_page() -> str:
    """``docs/benchmarks/speed.md``: the speed scripts' own result pages, concatenated (nothing typed by hand)."""
    parts = [
        "<!-- generated by python -m benchmarks.readme from "
        + ", ".join(f"docs/benchmarks/{name}" for name, _ in SPEED_PARTS)
        + " -->"
    ]
    for name, command in SPEED_PARTS:
        path = DOCS / name
        text = path.read_text().strip() if path.exists() else f"_Not run yet: `{command}`._"
        parts.append(re.sub(r"^# ", "### ", text, flags=re.M))  # a sub-section of the README's Benchmarks
    return "\n\n".join(parts) + "\n"


SECTIONS: dict[str, Callable[[], str]] = {
    "matrix": matrix_section,
    "benchmark": _file_section("summary.md", "python -m benchmarks.run"),
    "speed": _file_section("speed.md", "python -m benchmarks.trpo_update_speed"),
}


def render(text: str) -> str:
    """``text`` with every generated section rewritten."""
    for name, section in SECTIONS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.S)
        text = pattern.sub(lambda m, s=section: m.group(1) + s() + "\n" + m.group(2), text)  # type: ignore[misc]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    speed = DOCS / "speed.md"
    if args.check:
        if not speed.exists() or speed.read_text() != speed_page():
            print("docs/benchmarks/speed.md is out of date: run python -m benchmarks.readme", file=sys.stderr)
            return 1
    else:
        speed.write_text(speed_page())
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print("README.md is out of date: run python -m benchmarks.readme", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
