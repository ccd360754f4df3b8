"""GRPO for Stable-Baselines3 (docs/maths.md#6-grpo, DeepSeekMath; DAPO, Dr. GRPO, RLOO variants)."""

from sb3_pg_extras.grpo.algo import GRPO
from sb3_pg_extras.grpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["GRPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
