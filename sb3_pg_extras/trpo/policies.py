"""Policies for :class:`sb3_pg_extras.TRPO`: SB3's actor-critic policies (same aliases as ``sb3_contrib.TRPO``).

TRPO needs an actor (the action distribution) and a critic (``predict_values``). Which parameters belong to which is
decided structurally at every update (autograd reachability, see ``TRPO``), so any ``ActorCriticPolicy`` subclass
works, whatever its modules are called.

Example::

    >>> from sb3_pg_extras.trpo import TRPO
    >>> model = TRPO("MlpPolicy", "CartPole-v1")  # doctest: +SKIP
"""

from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy"]

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy
