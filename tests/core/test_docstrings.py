"""The ``Example::`` blocks of the core's docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "pg_extras",
    "pg_extras.episodes",
    "pg_extras.group",
    "pg_extras.kl",
    "pg_extras.returns",
    "pg_extras.surrogate",
    "pg_extras.trust_region",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, extraglobs={"torch": __import__("torch")}
    )
    assert result.failed == 0
