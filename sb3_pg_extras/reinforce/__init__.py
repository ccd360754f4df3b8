"""REINFORCE (Williams 1992; seed 2.1) for Stable-Baselines3."""

from sb3_pg_extras.reinforce.algo import REINFORCE
from sb3_pg_extras.reinforce.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["REINFORCE", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
