"""The ``Examples:`` blocks of the public TorchRL adapters run and give the documented output."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

torch.set_num_threads(1)

MODULES = ["value", "reinforce", "trpo", "grpo", "envs", "collectors", "configs"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"torchrl_pg_extras.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
