"""Helpers shared by the SB3 tests."""

from __future__ import annotations


def capture_training_batches(model):
    """Record ``(batch, estimate)`` of every update of an episodic algorithm (spies on ``model._advantages``)."""
    seen = []
    advantages = model._advantages

    def spy(batch, values=None):
        estimate = advantages(batch, values)
        seen.append((batch, estimate))
        return estimate

    model._advantages = spy
    return seen
