"""Argument checks of the core (kept for existing imports): see :mod:`pg_extras.validation`, the public vocabulary."""

from __future__ import annotations

from pg_extras.validation import (
    check_bool,
    check_choice,
    check_finite,
    check_float,
    check_int,
    check_nonnegative,
    check_positive,
    check_rate_or_schedule,
    check_same_shape,
    check_unit_interval,
)

__all__ = [
    "check_bool",
    "check_choice",
    "check_finite",
    "check_float",
    "check_int",
    "check_nonnegative",
    "check_positive",
    "check_rate_or_schedule",
    "check_same_shape",
    "check_unit_interval",
]
