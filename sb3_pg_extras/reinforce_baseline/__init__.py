"""REINFORCE with a learned baseline V(s) (docs/maths.md#3-baselines-and-gae) for Stable-Baselines3."""

from sb3_pg_extras.reinforce_baseline.algo import REINFORCEWithBaseline
from sb3_pg_extras.reinforce_baseline.policies import (
    BaselineCnnPolicy,
    BaselineMultiInputPolicy,
    BaselinePolicy,
    CnnPolicy,
    MlpPolicy,
    MultiInputPolicy,
)

__all__ = [
    "BaselineCnnPolicy",
    "BaselineMultiInputPolicy",
    "BaselinePolicy",
    "CnnPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "REINFORCEWithBaseline",
]
