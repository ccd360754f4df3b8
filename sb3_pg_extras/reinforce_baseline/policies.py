"""Policies of :class:`~sb3_pg_extras.reinforce_baseline.REINFORCEWithBaseline`: an actor and a separately trained V(s).

SB3's ``ActorCriticPolicy`` with the actor and the critic split into two parameter sets and two optimizers
(docs/maths.md#3-baselines-and-gae: the policy and the baseline are two models updated by two different losses):

* ``optimizer`` holds the actor parameters (features extractor, ``mlp_extractor.policy_net``, ``action_net``,
  ``log_std``) and is stepped by the policy-gradient loss;
* ``vf_optimizer`` holds the critic parameters (``mlp_extractor.value_net``, ``value_net`` and, if not shared, the
  critic's features extractor) and is stepped by the MSE to the returns.

With a shared features extractor the critic reads *detached* features (:meth:`BaselinePolicy.critic_values`), so a
critic step never moves an actor parameter.

Example::

    >>> import gymnasium as gym
    >>> env = gym.make("CartPole-v1")
    >>> policy = BaselinePolicy(env.observation_space, env.action_space, lambda _: 1e-3)
    >>> actor = {id(p) for p in policy.actor_parameters()}
    >>> any(id(p) in actor for p in policy.critic_parameters())
    False
"""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule

from sb3_pg_extras.common.policies import init_log_std_

__all__ = ["BaselineCnnPolicy", "BaselineMultiInputPolicy", "BaselinePolicy", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]


class BaselinePolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` with separate actor (``optimizer``) and critic (``vf_optimizer``) optimizers.

    ``log_std_init=None`` (the default) starts a Gaussian's sigma at half the action range, as the critic-free policies
    (:func:`sb3_pg_extras.common.policies.init_log_std_`); a float is SB3's meaning.
    """

    vf_optimizer: th.optim.Optimizer

    def __init__(self, *args: Any, log_std_init: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, log_std_init=0.0 if log_std_init is None else log_std_init, **kwargs)
        init_log_std_(self, log_std_init)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        # The critic's learning rate is set by the algorithm (vf_learning_rate) before every critic step.
        self.optimizer = self.optimizer_class(self.actor_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]
        self.vf_optimizer = self.optimizer_class(self.critic_parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _critic_modules(self) -> list[th.nn.Module]:
        modules: list[th.nn.Module] = [self.mlp_extractor.value_net, self.value_net]
        if not self.share_features_extractor:
            modules.append(self.vf_features_extractor)
        return modules

    def critic_parameters(self) -> list[th.nn.Parameter]:
        """Parameters trained by the critic loss only."""
        return [p for module in self._critic_modules() for p in module.parameters()]

    def actor_parameters(self) -> list[th.nn.Parameter]:
        """Parameters trained by the policy-gradient loss (all parameters that are not the critic's)."""
        critic = {id(p) for p in self.critic_parameters()}
        return [p for p in self.parameters() if id(p) not in critic]

    def critic_values(self, obs: PyTorchObs) -> th.Tensor:
        """``V(s)`` of shape ``[batch]``, differentiable only with respect to :meth:`critic_parameters`."""
        features = BasePolicy.extract_features(self, obs, self.vf_features_extractor)
        if self.share_features_extractor:
            features = features.detach()
        return self.value_net(self.mlp_extractor.forward_critic(features)).flatten()


class BaselineCnnPolicy(BaselinePolicy):
    """:class:`BaselinePolicy` with SB3's ``NatureCNN`` features extractor (image observations)."""

    def __init__(
        self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any
    ) -> None:
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class BaselineMultiInputPolicy(BaselinePolicy):
    """:class:`BaselinePolicy` for ``Dict`` observation spaces (SB3's ``CombinedExtractor``)."""

    def __init__(
        self, observation_space: spaces.Dict, action_space: spaces.Space, lr_schedule: Schedule, **kwargs: Any
    ) -> None:
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


MlpPolicy = BaselinePolicy
CnnPolicy = BaselineCnnPolicy
MultiInputPolicy = BaselineMultiInputPolicy
