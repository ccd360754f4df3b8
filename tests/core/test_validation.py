"""The argument-validation vocabulary (pg_extras.validation): every message names the argument, the value and the fix."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from pg_extras import validation
from pg_extras.validation import (
    check_bool,
    check_choice,
    check_finite,
    check_float,
    check_int,
    check_rate_or_schedule,
    check_same_shape,
)


def test_docstring_examples():
    result = doctest.testmod(validation, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# -- strings for numbers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("check", [check_float, check_int, check_rate_or_schedule])
def test_numbers_given_as_strings_say_write_without_quotes(check):
    with pytest.raises(ValueError, match=r"^gamma='0\.99' is a string: write the number without quotes \(gamma=0\.99"):
        check("gamma", "0.99")


def test_yaml_exponent_strings_get_the_yaml_spelling():
    with pytest.raises(ValueError, match=r"learning_rate: 1\.0e-3.*!!float 1e-3.*YAML 1\.1 reads 1e-3 as a string"):
        check_float("learning_rate", "1e-3")
    with pytest.raises(ValueError, match=r"`n: 1\.0e\+6`"):
        check_int("n", "1e6")
    with pytest.raises(ValueError, match=r"'abc' is a string, not a number"):
        check_float("beta", "abc")


# -- check_float ------------------------------------------------------------------------------------------------------


def test_check_float_accepts_numbers_and_returns_python_floats():
    for value in (0.5, 1, np.float32(0.5), np.int64(1), torch.tensor(0.5), np.array(0.25)):
        out = check_float("x", value, low=0.0, high=1.0)
        assert type(out) is float and out == float(value)
    assert check_float("x", None, allow_none=True) is None
    assert check_float("x", float("inf"), low=0.0, allow_inf=True) == math.inf


@pytest.mark.parametrize(
    "value, kwargs, pattern",
    [
        (float("nan"), {}, r"x=nan is invalid: x must be a finite number"),
        (float("inf"), {"low": 0.0}, r"x=inf is invalid: x must be a finite number >= 0"),
        (float("nan"), {"allow_inf": True}, r"x must be a number \(not NaN\)"),
        (-0.1, {"low": 0.0, "high": 1.0}, r"x=-0.1 is invalid: x must be a finite number in \[0, 1\]"),
        (0.0, {"low": 0.0, "low_inclusive": False}, r"x must be a finite number > 0"),
        (1.0, {"low": 0.0, "high": 1.0, "high_inclusive": False}, r"in \[0, 1\)"),
        (2.0, {"high": 1.0}, r"<= 1"),
        (None, {}, r"x=None is invalid"),
        (None, {"low": 0.0, "allow_none": False}, r"x=None is invalid: x must be a finite number >= 0"),
        (True, {}, r"x=True is a bool, not a number"),
        ([0.1], {}, r"x=\[0.1\] is invalid: x must be a number, not a list"),
        (torch.zeros(2), {}, r"x must be a number, got a Tensor of shape \(2,\)"),
        (-1.0, {"low": 0.0, "allow_none": True, "hint": "e.g. 0.01"}, r">= 0 or None: e\.g\. 0\.01\.$"),
    ],
)
def test_check_float_rejects(value, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_float("x", value, **kwargs)


# -- check_int --------------------------------------------------------------------------------------------------------


def test_check_int_accepts_integers_and_integral_floats():
    assert check_int("n", np.int32(3), minimum=1) == 3
    out = check_int("n", 1e6, minimum=1)
    assert out == 1_000_000 and type(out) is int
    assert check_int("n", None, allow_none=True) is None
    assert check_int("n", 5, minimum=0, maximum=5) == 5


@pytest.mark.parametrize(
    "value, pattern",
    [
        (0, r"n=0 is invalid: n must be an integer >= 1: steps per env\.$"),
        (2.5, r"n=2.5 is invalid: n must be an integer >= 1"),
        (float("nan"), r"n=nan is invalid"),
        (True, r"n=True is a bool, not an integer"),
        ("8", r"n='8' is a string: write the number without quotes \(n=8"),
        (None, r"n=None is invalid: n must be an integer >= 1"),
    ],
)
def test_check_int_rejects(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_int("n", value, minimum=1, hint="steps per env")


def test_check_int_maximum_and_none_in_message():
    with pytest.raises(ValueError, match=r"in \[1, 4\] or None"):
        check_int("n", 5, minimum=1, maximum=4, allow_none=True)


# -- check_bool -------------------------------------------------------------------------------------------------------


def test_check_bool_accepts_only_booleans():
    assert check_bool("flag", True) is True
    assert check_bool("flag", np.bool_(False)) is False
    assert check_bool("flag", None, allow_none=True) is None


@pytest.mark.parametrize(
    "value, pattern",
    [
        ("no", r"flag='no' is invalid: flag must be True or False \(write flag=False without quotes; in YAML `flag: false`\)"),
        ("yes", r"write flag=True"),
        ("False", r"write flag=False"),
        (0, r"flag=0 is invalid: flag must be True or False \(a bool, not an int\)"),
        (1, r"not an int"),
        (1.0, r"not a float"),
        (None, r"not None"),
    ],
)
def test_check_bool_rejects(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_bool("flag", value)


# -- check_choice -----------------------------------------------------------------------------------------------------


def test_check_choice():
    assert check_choice("mode", "outcome", ("outcome", "process")) == "outcome"
    with pytest.raises(
        ValueError, match=r"Unknown mode='outcom': use one of 'outcome', 'process' \(did you mean 'outcome'\?\)"
    ):
        check_choice("mode", "outcom", ("outcome", "process"))
    with pytest.raises(ValueError, match=r"Unknown mode=\['x'\]"):
        check_choice("mode", ["x"], ("outcome",))
    with pytest.raises(ValueError, match=r"Unknown mode=3: use one of 'a'\.$"):
        check_choice("mode", 3, ("a",))


# -- check_rate_or_schedule -------------------------------------------------------------------------------------------


def test_rate_or_schedule_accepts_rates_and_schedules():
    assert check_rate_or_schedule("learning_rate", 3e-4) == 3e-4
    assert check_rate_or_schedule("learning_rate", 0) == 0.0
    schedule = lambda progress: 1e-3 * progress  # noqa: E731
    assert check_rate_or_schedule("learning_rate", schedule) is schedule
    assert check_rate_or_schedule("clip_range_high", None, allow_none=True) is None
    assert check_rate_or_schedule("lr", lambda p: np.float32(0.1)) is not None


@pytest.mark.parametrize(
    "value, kwargs, pattern",
    [
        (-1e-3, {}, r"learning_rate=-0.001 is invalid: learning_rate must be a finite number >= 0 or a schedule"),
        (float("nan"), {}, r"learning_rate=nan is invalid"),
        (float("inf"), {}, r"learning_rate=inf is invalid"),
        (0.0, {"allow_zero": False}, r"must be a finite number > 0 or a schedule"),
        (True, {}, r"learning_rate=True is invalid: .* or a schedule"),
        ("3e-4", {}, r"learning_rate='3e-4' is a string: write the number without quotes"),
        (None, {}, r"learning_rate=None is invalid"),
        (
            lambda p: -1.0,
            {},
            r"learning_rate schedule returned -1.0 at progress_remaining=1.0: it must return a finite number >= 0",
        ),
        (lambda p: 1.0 - 2 * p, {}, r"returned -1.0 at progress_remaining=1.0"),
        (lambda p: 1.0 / p, {}, r"raised ZeroDivisionError.*progress_remaining=0.0"),
        (lambda p: p * 0.1 if p > 0.5 else float("nan"), {}, r"returned nan at progress_remaining=0.0"),
        (lambda p: "0.1", {}, r"returned '0.1' \(a str\)"),
        (lambda: 0.1, {}, r"raised TypeError.*a schedule takes progress_remaining"),
        (lambda p: 0.0, {"allow_zero": False}, r"returned 0.0 at progress_remaining=1.0: it must return a finite number > 0"),
    ],
)
def test_rate_or_schedule_rejects(value, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_rate_or_schedule("learning_rate", value, **kwargs)


# -- tensors ----------------------------------------------------------------------------------------------------------


def test_check_finite_counts_and_locates_the_bad_entries():
    x = torch.zeros(3, 2)
    assert check_finite("x", x) is x
    assert check_finite("ids", torch.tensor([1, 2])) is not None
    x[1, 0] = float("nan")
    x[2, 1] = -float("inf")
    with pytest.raises(
        ValueError, match=r"^rewards has non-finite values \(1 NaN, 1 inf of 6, first at index \(1, 0\): nan\): fix"
    ):
        check_finite("rewards", x, hint="fix")
    with pytest.raises(
        ValueError, match=r"^returns overflow to inf/NaN .* although rewards are finite: .*float32 \(max 3.4e\+38\)"
    ):
        check_finite("returns", x, hint="rescale", derived_from="rewards")
    with pytest.raises(ValueError, match=r"\(1 NaN, 0 inf of 1, first at index \(\): nan\)"):
        check_finite("loss", torch.tensor(float("nan")))


def test_check_same_shape():
    check_same_shape("a", torch.zeros(2), b=torch.zeros(2), c=None)
    with pytest.raises(ValueError, match=r"b has shape \(3,\) but a has shape \(2,\): pass b with the same shape as a"):
        check_same_shape("a", torch.zeros(2), b=torch.zeros(3))


def test_short_forms_keep_their_meaning():
    assert validation.check_nonnegative("x", None) is None
    assert validation.check_nonnegative("x", float("inf")) == math.inf
    assert validation.check_positive("max_kl", 0.01) == 0.01
    assert validation.check_unit_interval("gamma", 1) == 1.0
    for check, value in [
        (validation.check_positive, 0.0),
        (validation.check_nonnegative, -1),
        (validation.check_unit_interval, 1.5),
    ]:
        with pytest.raises(ValueError, match=r"x="):
            check("x", value)
    with pytest.raises(ValueError, match="is a string"):
        validation.check_unit_interval("gamma", "0.99")
    with pytest.raises(ValueError, match="x=nan"):
        validation.check_positive("x", float("nan"))


def test_check_finite_with_a_mask_checks_the_valid_entries_only_and_names_the_owner():
    values = torch.tensor([[1.0, float("nan")], [2.0, 3.0]])
    valid = torch.tensor([[True, False], [True, True]])
    assert validation.check_finite("advantage", values, mask=valid) is values  # the NaN is padding
    values[1, 0] = float("inf")
    with pytest.raises(
        ValueError, match=r"^GRPOLoss: advantage has non-finite values \(0 NaN, 1 inf of 4, first at index \(1, 0\)"
    ):
        validation.check_finite("advantage", values, "rescale the rewards", mask=valid, owner="GRPOLoss")
