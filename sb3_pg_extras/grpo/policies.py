"""Policies of :class:`~sb3_pg_extras.GRPO`: critic-free actors (no value head), as in DeepSeekMath's GRPO.

Example::

    >>> from sb3_pg_extras.grpo.policies import MlpPolicy
    >>> MlpPolicy.__name__
    'ActorOnlyPolicy'
"""

from sb3_pg_extras.common.policies import ActorOnlyCnnPolicy, ActorOnlyMultiInputPolicy, ActorOnlyPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

MlpPolicy = ActorOnlyPolicy
CnnPolicy = ActorOnlyCnnPolicy
MultiInputPolicy = ActorOnlyMultiInputPolicy
