"""Stable-Baselines3 policy-gradient algorithms: REINFORCE, REINFORCEWithBaseline, TRPO, GRPO.

Example::

    >>> from sb3_pg_extras import GRPO
    >>> model = GRPO("MlpPolicy", "CartPole-v1", n_envs=8, group_size=8)  # doctest: +SKIP
    >>> model.learn(50_000)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pg_extras.version import __version__
from sb3_pg_extras.registry import ALGORITHMS

if TYPE_CHECKING:
    from sb3_pg_extras.common.group_env import GroupResetWrapper
    from sb3_pg_extras.common.vec_env import GymnasiumVecEnv
    from sb3_pg_extras.grpo import GRPO
    from sb3_pg_extras.reinforce import REINFORCE
    from sb3_pg_extras.reinforce_baseline import REINFORCEWithBaseline
    from sb3_pg_extras.trpo import TRPO

# class name -> module (lazy imports); the zoo names live in sb3_pg_extras.registry
_ALGOS = {entry.class_name: entry.module for entry in ALGORITHMS.values()}
_ALGOS["GroupResetWrapper"] = "sb3_pg_extras.common.group_env"
_ALGOS["GymnasiumVecEnv"] = "sb3_pg_extras.common.vec_env"

__all__ = ["GRPO", "REINFORCE", "TRPO", "GroupResetWrapper", "GymnasiumVecEnv", "REINFORCEWithBaseline", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy import: `import sb3_pg_extras.common` does not pull every algorithm.
    if name in _ALGOS:
        return getattr(importlib.import_module(_ALGOS[name]), name)
    raise AttributeError(f"module 'sb3_pg_extras' has no attribute {name!r}")
