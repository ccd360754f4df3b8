"""What every benchmark runner returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Curve:
    """Evaluation curve of one run: env steps, mean / std of the evaluation return, training wall time (eval excluded)."""

    steps: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    train_time: list[float] = field(default_factory=list)
