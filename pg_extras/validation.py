"""Argument validation shared by the core and by every constructor of the SB3 and TorchRL adapters.

One vocabulary, one policy (docs/design.md "Conventions"): a bad argument raises ``ValueError`` whose message names the
argument, shows the bad value and says how to fix it. The checks return the validated value, normalised to a plain
Python type, so a constructor can write::

    self.gamma = check_float("gamma", gamma, low=0.0, high=1.0)
    self.n_steps = check_int("n_steps", n_steps, minimum=1)
    self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
    self.learning_rate = check_rate_or_schedule("learning_rate", learning_rate)

Policy:

* numbers given as strings (``gamma="0.99"``, a YAML ``gamma: "0.99"`` or ``learning_rate: 1e-3``, which YAML 1.1
  reads as a string) are errors, as in SB3, which does not convert them either; the message says to write the number
  without quotes;
* booleans are never numbers (``n_steps=True`` is an error) and numbers are never booleans (``normalize=1`` and
  ``normalize="no"`` are errors): a boolean argument takes ``True`` / ``False`` (or a numpy bool);
* NaN is always rejected; ``inf`` only where ``allow_inf=True``;
* integers accept Python and numpy integers and integral floats (``1e6``, ``2048.0``, as YAML files write them);
* tensors: :func:`check_finite` raises on NaN / inf with the count, the first bad index and the likely fix.

Example::

    >>> check_float("gamma", 0.99, low=0.0, high=1.0)
    0.99
    >>> check_float("gamma", "0.99", low=0.0, high=1.0)
    Traceback (most recent call last):
    ...
    ValueError: gamma='0.99' is a string: write the number without quotes (gamma=0.99; in YAML `gamma: 0.99`).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

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


def _tail(hint: str) -> str:
    """``": hint."`` or ``"."``: the end of a message."""
    hint = hint.strip()
    if not hint:
        return "."
    return f": {hint}" if hint.endswith((".", "!", "?", ")")) else f": {hint}."


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def _yaml_literal(literal: str) -> str:
    """``literal`` as YAML 1.1 (PyYAML) reads a float: a dot in the mantissa and a sign in the exponent."""
    mantissa, sep, exponent = literal.lower().partition("e")
    if not sep:
        return literal
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[:1] not in "+-":
        exponent = "+" + exponent
    return f"{mantissa}e{exponent}"


def _string_number_error(name: str, value: str) -> ValueError:
    literal = value.strip()
    try:
        float(literal)
    except ValueError:
        return ValueError(f"{name}={value!r} is a string, not a number: pass a number.")
    yaml = _yaml_literal(literal)
    note = f" or `{name}: !!float {literal}`; YAML 1.1 reads {literal} as a string" if yaml != literal else ""
    return ValueError(
        f"{name}={value!r} is a string: write the number without quotes ({name}={literal}; in YAML `{name}: {yaml}`{note})."
    )


def _as_number(name: str, value: Any, kind: str) -> float | int:
    """``value`` as a Python float/int; raise for strings, bools, arrays and other types."""
    if isinstance(value, str):
        raise _string_number_error(name, value)
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}={value!r} is a bool, not {kind}: pass a number.")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        complex_tensor = isinstance(value, torch.Tensor) and value.is_complex()
        if value.ndim != 0 or value.dtype in (torch.bool, np.bool_) or complex_tensor:
            raise ValueError(
                f"{name} must be {kind}, got {_article(type(value).__name__)} of shape {tuple(value.shape)}: pass a number."
            )
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"{name}={value!r} is invalid: {name} must be {kind}, not {_article(type(value).__name__)}.")


def check_choice(name: str, value: Any, choices: Iterable[Any], hint: str = "") -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them (and the closest one).

    Example::

        >>> check_choice("scale", "grp", ("group", "batch", "none"))
        Traceback (most recent call last):
        ...
        ValueError: Unknown scale='grp': use one of 'group', 'batch', 'none' (did you mean 'group'?).
    """
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # e.g. an unhashable value compared with a choice that raises
        ok = False
    if ok:
        return value
    guess = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        if close:
            guess = f" (did you mean {close[0]!r}?)"
    raise ValueError(f"Unknown {name}={value!r}: use one of {', '.join(repr(c) for c in choices)}{guess}{_tail(hint)}")


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
    hint: str = "",
) -> int | None:
    """Return ``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``, else raise ``ValueError``.

    Python and numpy integers and integral floats (``1e6``) are accepted; bools, strings, NaN and fractions are not.

    Example::

        >>> check_int("n_steps", 2048.0, minimum=1)
        2048
        >>> check_int("n_steps", 0, minimum=1, hint="the rollout length per env")
        Traceback (most recent call last):
        ...
        ValueError: n_steps=0 is invalid: n_steps must be an integer >= 1: the rollout length per env.
    """
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name}=None is invalid: {name} must be an integer{_range_text(minimum, maximum)}{_tail(hint)}")
    number = _as_number(name, value, "an integer")
    if isinstance(number, float):
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError(
                f"{name}={value!r} is invalid: {name} must be an integer{_range_text(minimum, maximum)}"
                f"{' or None' if allow_none else ''}{_tail(hint)}"
            )
        number = int(number)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(
            f"{name}={value!r} is invalid: {name} must be an integer{_range_text(minimum, maximum)}"
            f"{' or None' if allow_none else ''}{_tail(hint)}"
        )
    return number


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_float(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
    allow_inf: bool = False,
    hint: str = "",
) -> float | None:
    """Return ``value`` as a ``float`` if it is a number in the interval, else raise ``ValueError``.

    :param low: lower bound (``None``: none); ``low_inclusive`` says whether ``low`` itself is allowed.
    :param high: upper bound (``None``: none); ``high_inclusive`` likewise.
    :param allow_none: accept ``None`` (returned as is).
    :param allow_inf: accept ``+inf`` / ``-inf`` (still subject to the bounds); NaN is never accepted.
    :param hint: what the argument means or a typical value, appended to the message.

    Example::

        >>> check_float("clip_range", 0.2, low=0.0, low_inclusive=False)
        0.2
        >>> check_float("beta", float("nan"), low=0.0, hint="the KL weight, e.g. 0.04")
        Traceback (most recent call last):
        ...
        ValueError: beta=nan is invalid: beta must be a finite number >= 0: the KL weight, e.g. 0.04.
    """
    requirement = _interval_text(low, high, low_inclusive, high_inclusive, allow_inf)
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name}=None is invalid: {name} must be {requirement}{_tail(hint)}")
    number = float(_as_number(name, value, "a number"))
    none = " or None" if allow_none else ""
    bad = math.isnan(number) or (math.isinf(number) and not allow_inf)
    if low is not None:
        bad = bad or (number < low if low_inclusive else number <= low)
    if high is not None:
        bad = bad or (number > high if high_inclusive else number >= high)
    if bad:
        raise ValueError(f"{name}={value!r} is invalid: {name} must be {requirement}{none}{_tail(hint)}")
    return number


def _interval_text(low: float | None, high: float | None, low_inc: bool, high_inc: bool, allow_inf: bool) -> str:
    kind = "a number (not NaN)" if allow_inf else "a finite number"
    if low is not None and high is not None:
        return f"{kind} in {'[' if low_inc else '('}{low:g}, {high:g}{']' if high_inc else ')'}"
    if low is not None:
        return f"{kind} {'>=' if low_inc else '>'} {low:g}"
    if high is not None:
        return f"{kind} {'<=' if high_inc else '<'} {high:g}"
    return kind


def check_bool(name: str, value: Any, allow_none: bool = False, hint: str = "") -> bool | None:
    """Return ``value`` as a ``bool`` if it is ``True`` / ``False`` (or a numpy bool), else raise ``ValueError``.

    Strings (``"no"``, ``"False"``) and numbers (``0``, ``1``) are errors: ``bool("no")`` is ``True``.

    Example::

        >>> check_bool("normalize_advantage", "no")
        Traceback (most recent call last):
        ...
        ValueError: normalize_advantage='no' is invalid: normalize_advantage must be True or False (write
        normalize_advantage=False without quotes; in YAML `normalize_advantage: false`).
    """
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        literal = {"true": "True", "yes": "True", "on": "True", "1": "True"}.get(value.strip().lower(), "False")
        fix = f" (write {name}={literal} without quotes; in YAML `{name}: {literal.lower()}`)"
    else:
        fix = f" (a bool, not {'None' if value is None else _article(type(value).__name__)})"
    none = ", or None" if allow_none else ""
    raise ValueError(f"{name}={value!r} is invalid: {name} must be True or False{none}{fix}{_tail(hint)}")


def check_rate_or_schedule(
    name: str,
    value: Any,
    allow_zero: bool = True,
    allow_none: bool = False,
    hint: str = "",
) -> float | Callable[[float], float] | None:
    """Return a learning rate / clip range: a finite float ``>= 0`` (``> 0`` if not ``allow_zero``) or a schedule.

    A schedule is a callable of SB3's ``progress_remaining`` (1.0 at the start of training, 0.0 at the end); it is
    probed at 1.0 and 0.0 and must return finite numbers with the same bound there. Callables are returned as is,
    numbers as ``float``.

    Example::

        >>> check_rate_or_schedule("learning_rate", lambda p: 3e-4 * p)(0.5)
        0.00015
        >>> check_rate_or_schedule("learning_rate", lambda p: -1.0)
        Traceback (most recent call last):
        ...
        ValueError: learning_rate schedule returned -1.0 at progress_remaining=1.0: ...
    """
    bound = ">= 0" if allow_zero else "> 0"
    what = f"a finite number {bound} or a schedule (a callable of progress_remaining, from 1.0 to 0.0)"
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name}=None is invalid: {name} must be {what}{_tail(hint)}")
    if callable(value) and not isinstance(value, (torch.Tensor, np.ndarray)):
        for progress in (1.0, 0.0):
            try:
                out = value(progress)
            except Exception as exc:  # re-raised with the argument's name
                raise ValueError(
                    f"{name} schedule raised {type(exc).__name__}: {exc} when called with progress_remaining={progress}: "
                    f"a schedule takes progress_remaining (1.0 at the start, 0.0 at the end) and returns a number"
                    f"{_tail(hint)}"
                ) from exc
            try:
                number = float(_as_number(name, out, "a number"))
            except ValueError:
                raise ValueError(
                    f"{name} schedule returned {out!r} ({_article(type(out).__name__)}) at progress_remaining={progress}: "
                    f"it must return a finite number {bound}{_tail(hint)}"
                ) from None
            if not math.isfinite(number) or (number < 0 if allow_zero else number <= 0):
                raise ValueError(
                    f"{name} schedule returned {out!r} at progress_remaining={progress}: it must return a finite number "
                    f"{bound}{_tail(hint)}"
                )
        return value
    try:
        number = float(_as_number(name, value, what))
    except ValueError as exc:
        if isinstance(value, str):
            raise
        raise ValueError(f"{name}={value!r} is invalid: {name} must be {what}{_tail(hint)}") from exc
    if not math.isfinite(number) or (number < 0 if allow_zero else number <= 0):
        raise ValueError(f"{name}={value!r} is invalid: {name} must be {what}{_tail(hint)}")
    return number


def check_finite(
    name: str,
    tensor: torch.Tensor,
    hint: str = "",
    derived_from: str | None = None,
    *,
    mask: torch.Tensor | None = None,
    owner: str | None = None,
) -> torch.Tensor:
    """Return ``tensor`` if it holds no NaN / inf, else raise ``ValueError`` naming it, the bad entries and the fix.

    Costs one device synchronisation. Integer and bool tensors are always finite.

    :param name: what the tensor is (``"rewards"``, ``"returns"``, ``"values"``, ``"log_prob"``).
    :param hint: the likely cause and fix, appended to the message.
    :param derived_from: for a quantity computed from inputs already checked finite (say ``"rewards"``), the message
        says that the computation overflowed the dtype instead of blaming the input.
    :param mask: optional bool mask of the valid entries (its shape a prefix of the tensor's): padding may hold
        anything, only the valid entries are checked.
    :param owner: the class or function to name at the start of the message (e.g. ``"GRPOLoss"``).

    Example::

        >>> check_finite("returns", torch.tensor([1.0, float("inf")]), hint="rescale the rewards")
        Traceback (most recent call last):
        ...
        ValueError: returns has non-finite values (0 NaN, 1 inf of 2, first at index (1,): inf): rescale the rewards.
    """
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return tensor
    finite = torch.isfinite(tensor)
    if mask is not None:  # padding counts as finite
        finite = finite | ~mask.to(torch.bool).reshape(mask.shape + (1,) * (tensor.dim() - mask.dim()))
    if bool(finite.all()):
        return tensor
    message = _non_finite_message(name, tensor, finite, hint, derived_from)
    raise ValueError(message if owner is None else f"{owner}: {message}")


def _non_finite_message(name: str, tensor: torch.Tensor, finite: torch.Tensor, hint: str, derived_from: str | None) -> str:
    t = tensor.detach()
    n_nan = int((torch.isnan(t) & ~finite).sum())
    n_inf = int((~finite).sum()) - n_nan
    first = tuple(int(i) for i in torch.nonzero(~finite)[0].tolist()) if t.dim() else ()
    value = t[first].item() if t.dim() else t.item()
    details = f"{n_nan} NaN, {n_inf} inf of {t.numel()}, first at index {first}: {value}"
    if derived_from is not None:
        big = torch.finfo(t.dtype).max
        verb = "are" if derived_from.endswith("s") or " and " in derived_from else "is"
        head = (
            f"{name} overflow{'s' if not name.endswith('s') else ''} to inf/NaN ({details}) although {derived_from} "
            f"{verb} finite: the values exceed the range of {t.dtype} "
            f"(max {big:.3g})"
        )
    else:
        head = f"{name} has non-finite values ({details})"
    return head + _tail(hint or "check the inputs that produced it")


def check_same_shape(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Raise ``ValueError`` if any of ``others`` (``None`` skipped) has a shape different from ``reference``."""
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape {tuple(reference.shape)}: "
                f"pass {name} with the same shape as {reference_name}."
            )


# -- short forms -------------------------------------------------------


def check_nonnegative(name: str, value: Any, hint: str = "") -> float | None:
    """``value >= 0`` (``None`` and ``inf`` allowed); returns it as a float."""
    return check_float(name, value, low=0.0, allow_none=True, allow_inf=True, hint=hint)


def check_positive(name: str, value: Any, hint: str = "") -> float:
    """``value > 0`` (``inf`` allowed); returns it as a float."""
    return check_float(name, value, low=0.0, low_inclusive=False, allow_inf=True, hint=hint)  # type: ignore[return-value]


def check_unit_interval(name: str, value: Any, hint: str = "") -> float:
    """``0 <= value <= 1``; returns it as a float."""
    return check_float(name, value, low=0.0, high=1.0, hint=hint)  # type: ignore[return-value]
