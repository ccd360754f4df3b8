"""TRPO for Stable-Baselines3 (drop-in for ``sb3_contrib.TRPO``).

Example::

    >>> from sb3_pg_extras.trpo import TRPO
    >>> model = TRPO("MlpPolicy", "CartPole-v1")  # doctest: +SKIP
"""

from sb3_pg_extras.trpo.algo import ADVANTAGE_ESTIMATORS, TRPO, reachable_parameters
from sb3_pg_extras.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["ADVANTAGE_ESTIMATORS", "TRPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy", "reachable_parameters"]
