"""Argument checks shared by the core functions: every error names the argument and the fix."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def check_choice(name: str, value: str, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` if ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Unknown {name}={value!r}: use one of {', '.join(repr(c) for c in choices)}.")


def check_nonnegative(name: str, value: float | None) -> None:
    """Raise ``ValueError`` if ``value`` is negative (``None`` is allowed)."""
    if value is not None and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` if ``value`` is not strictly positive."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}.")


def check_unit_interval(name: str, value: float) -> None:
    """Raise ``ValueError`` if ``value`` is outside [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")


def check_same_shape(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Raise ``ValueError`` if any of ``others`` has a shape different from ``reference``."""
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape {tuple(reference.shape)}: "
                f"pass {name} with the same shape as {reference_name}."
            )


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values: check the environment's rewards / the inputs.")
