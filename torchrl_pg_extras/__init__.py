"""TorchRL loss modules for REINFORCE, TRPO and GRPO (any env, not only LLMs)."""

from pg_extras.version import __version__

__all__ = ["__version__"]
