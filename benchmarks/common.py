"""What every benchmark runner returns, and the one-file-per-run cache of ``benchmarks.run``.

A run file (``<cache>/<env>/<algo>/seed<k>.csv``) holds ``# key=value`` metadata lines (algorithm, env, seed, the
settings the run was made with, the fingerprint of its hyperparameters, the machine), then the evaluation curve as
CSV: ``steps,mean_return,std_return,train_time_s``. Standard library only: the TorchRL runner imports this module.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

CURVE_COLUMNS = ("steps", "mean_return", "std_return", "train_time_s")


@dataclass
class Curve:
    """Evaluation curve of one run: env steps, mean / std of the evaluation return, training wall time (eval excluded)."""

    steps: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    train_time: list[float] = field(default_factory=list)


@dataclass
class RunRecord:
    """One cached run: its metadata (strings, as written) and its curve."""

    meta: dict[str, str]
    curve: Curve

    @property
    def final(self) -> float:
        """Return of the last evaluation (at the end of the budget)."""
        return self.curve.mean[-1]

    @property
    def steps_per_second(self) -> float:
        """Training env-steps per second of wall time (evaluation excluded)."""
        c = self.curve
        return c.steps[-1] / c.train_time[-1] if c.steps and c.train_time[-1] > 0 else float("nan")

    def first_hit(self, threshold: float) -> float:
        """Env steps of the first evaluation whose mean return reached ``threshold`` (nan: never)."""
        return next((float(s) for s, m in zip(self.curve.steps, self.curve.mean, strict=True) if m >= threshold), float("nan"))

    def first_hit_time(self, threshold: float) -> float:
        """Training wall seconds (evaluation excluded) at that first evaluation (nan: never, or no times recorded)."""
        points = zip(self.curve.mean, self.curve.train_time or [math.nan] * len(self.curve.mean), strict=True)
        return next((float(t) for m, t in points if m >= threshold), float("nan"))


def run_path(cache: Path, env_id: str, algo: str, seed: int) -> Path:
    return cache / env_id / algo / f"seed{seed}.csv"


def write_run(path: Path, meta: dict[str, object], curve: Curve) -> None:
    """Write one run file atomically (a killed grid leaves either the whole file or none)."""
    buf = io.StringIO()
    for key, value in meta.items():
        text = "" if value is None else str(value)
        if "\n" in text or "=" in key:
            raise ValueError(f"bad metadata {key!r}={text!r}")
        buf.write(f"# {key}={text}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CURVE_COLUMNS)
    for s, m, sd, t in zip(curve.steps, curve.mean, curve.std, curve.train_time, strict=True):
        w.writerow([int(s), repr(float(m)), repr(float(sd)), f"{float(t):.3f}"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def read_run(path: Path) -> RunRecord:
    meta: dict[str, str] = {}
    rows: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            key, _, value = line[2:].partition("=")
            meta[key] = value
        elif line.strip():
            rows.append(line)
    reader = csv.DictReader(rows)
    curve = Curve()
    for row in reader:
        curve.steps.append(int(row["steps"]))
        curve.mean.append(float(row["mean_return"]))
        curve.std.append(float(row["std_return"]))
        curve.train_time.append(float(row["train_time_s"]))
    if not curve.steps:
        raise ValueError(f"{path}: no evaluation rows")
    return RunRecord(meta, curve)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a results CSV written by :func:`append_row` (none if it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict[str, object], fieldnames: list[str]) -> None:
    """Append one run's row to a results CSV (header first on a new file), so a stopped search resumes from it."""
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(row)
