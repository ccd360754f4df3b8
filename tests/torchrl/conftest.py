"""Fixtures shared by the TorchRL tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "torchrl"


@pytest.fixture
def examples_common():
    """``examples/torchrl/_common.py``, the examples' env, network and collector builders, imported as ``_common``."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import _common

        yield _common
    finally:
        sys.path.remove(str(EXAMPLES))
