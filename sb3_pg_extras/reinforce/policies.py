"""Policies of :class:`~sb3_pg_extras.reinforce.REINFORCE`: critic-free actors (no value head parameters at all).

``MlpPolicy``, ``CnnPolicy`` and ``MultiInputPolicy`` are the critic-free policies of
:mod:`sb3_pg_extras.common.policies` (SB3's ``ActorCriticPolicy`` minus the critic).
"""

from sb3_pg_extras.common.policies import ActorOnlyCnnPolicy, ActorOnlyMultiInputPolicy, ActorOnlyPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

MlpPolicy = ActorOnlyPolicy
CnnPolicy = ActorOnlyCnnPolicy
MultiInputPolicy = ActorOnlyMultiInputPolicy
