"""The one place where TorchRL objects' private state is read (docs/design.md "Private framework accesses").

TorchRL 0.14 has no public way to ask these two questions, so each is answered here once, read-only:

* :func:`native_autoreset`: whether a ``GymWrapper`` wraps an env that resets itself inside ``step`` (gymnasium's
  vector ``autoreset_mode``, TorchRL's ``_torchrl_native_autoreset``): reads ``GymWrapper._env`` and that flag;
* :func:`collector_env`: the env a collector was built on, without triggering a collector's attribute forwarding
  (reads the instance ``__dict__``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["collector_env", "native_autoreset"]


def native_autoreset(env: Any) -> bool:
    """Whether ``env`` (the innermost TorchRL env) resets its sub-envs itself inside ``step``."""
    state = getattr(env, "__dict__", {})
    mode = getattr(state.get("_env", None), "autoreset_mode", None)  # a gymnasium vector env's mode
    self_resetting = mode is not None and getattr(mode, "name", str(mode)) != "DISABLED"
    return bool(self_resetting or state.get("_torchrl_native_autoreset", False))


def collector_env(collector: Any) -> Any:
    """The ``env`` a single-process collector holds (``None`` for collectors whose envs live in workers)."""
    return getattr(collector, "__dict__", {}).get("env", None)
