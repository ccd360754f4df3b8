"""The one registry of the pg-extras algorithm names, used by the package, the RL Zoo glue and the benchmarks.

Example::

    >>> from sb3_pg_extras.registry import ALGORITHMS
    >>> ALGORITHMS["grpo"].class_name, ALGORITHMS["grpo"].config
    ('GRPO', 'grpo.yml')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["ALGORITHMS", "REPORT_SEEDS", "TUNING_SEEDS", "AlgorithmEntry", "held_out_seeds", "load_algorithm"]

#: The evaluation protocol (docs/design.md): configs, defaults and variants are chosen on the tuning seeds only; the
#: benchmark report runs on the held-out report seeds, which the tuning tools (``benchmarks.tune``,
#: ``benchmarks.ablation``, ``python -m sb3_pg_extras.zoo optimize``) refuse.
TUNING_SEEDS = (0, 1, 2, 3, 4)
REPORT_SEEDS = (100, 101, 102, 103, 104)


def held_out_seeds(seeds: list[int] | tuple[int, ...]) -> list[int]:
    """The members of ``seeds`` a tuning tool must refuse: 100 and above (the report seeds 100-104 and beyond).

    Example::

        >>> held_out_seeds([0, 3, 101])
        [101]
    """
    return [seed for seed in seeds if seed >= REPORT_SEEDS[0]]


@dataclass(frozen=True)
class AlgorithmEntry:
    """A zoo name: the class that implements it and its packaged hyperparameter file (``zoo_configs/``)."""

    module: str
    class_name: str
    config: str


#: zoo name -> entry. ``trpo_group`` is the critic-free TRPO (``TRPO(advantage_estimator="group")``).
ALGORITHMS: dict[str, AlgorithmEntry] = {
    "reinforce": AlgorithmEntry("sb3_pg_extras.reinforce", "REINFORCE", "reinforce.yml"),
    "reinforce_baseline": AlgorithmEntry(
        "sb3_pg_extras.reinforce_baseline", "REINFORCEWithBaseline", "reinforce_baseline.yml"
    ),
    "trpo": AlgorithmEntry("sb3_pg_extras.trpo", "TRPO", "trpo.yml"),
    "trpo_group": AlgorithmEntry("sb3_pg_extras.trpo", "TRPO", "trpo_group.yml"),
    "grpo": AlgorithmEntry("sb3_pg_extras.grpo", "GRPO", "grpo.yml"),
}


def load_algorithm(name: str) -> Any:
    """The class registered under the zoo name ``name``."""
    if name not in ALGORITHMS:
        raise ValueError(f"Unknown algorithm {name!r}: use one of {', '.join(map(repr, ALGORITHMS))}.")
    entry = ALGORITHMS[name]
    return getattr(importlib.import_module(entry.module), entry.class_name)
