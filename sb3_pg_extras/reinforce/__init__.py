"""REINFORCE (Williams 1992; docs/maths.md#2-reinforce-and-return-to-go) for Stable-Baselines3."""

from sb3_pg_extras.reinforce.algo import REINFORCE
from sb3_pg_extras.reinforce.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["REINFORCE", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
