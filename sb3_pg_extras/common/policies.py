"""Critic-free SB3 policies: an actor only, no value head parameters at all.

REINFORCE and GRPO (docs/design.md) have no critic. SB3's ``ActorCriticPolicy`` always builds ``value_net`` and the
value branch of ``MlpExtractor``; these subclasses build neither, so ``model.policy.parameters()`` holds only actor
weights. ``forward`` returns zeros in place of values so that SB3's rollout collection keeps working.

Example::

    >>> import gymnasium as gym
    >>> from sb3_pg_extras.common.policies import ActorOnlyPolicy
    >>> env = gym.make("CartPole-v1")
    >>> policy = ActorOnlyPolicy(env.observation_space, env.action_space, lambda _: 1e-3)
    >>> any("value" in name for name, _ in policy.named_parameters())
    False
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import CombinedExtractor, MlpExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs

__all__ = [
    "ActorOnlyCnnPolicy",
    "ActorOnlyMultiInputPolicy",
    "ActorOnlyPolicy",
    "action_range_log_std",
    "explain_non_finite_observations",
    "init_log_std_",
]

OBSERVATIONS_HINT = (
    "the env returned NaN or infinite observations: fix the env (VecCheckNan(env, raise_exception=True) finds the step), "
    "or normalise them (VecNormalize)"
)


def explain_non_finite_observations(obs: PyTorchObs, error: Exception) -> Exception:
    """The error to raise when the policy failed on ``obs``: a ``ValueError`` naming the observations if they are not
    finite (torch would blame the logits or a probability tensor), else ``error`` itself. Called only on failure."""
    tensors = obs.values() if isinstance(obs, dict) else [obs]
    bad = sum(int((~th.isfinite(t)).sum()) for t in tensors if th.is_tensor(t) and t.is_floating_point())
    if bad:
        return ValueError(f"observations: {bad} NaN or infinite values reached the policy; {OBSERVATIONS_HINT}.")
    return error


def action_range_log_std(action_space: spaces.Space) -> th.Tensor | None:
    """The log-std that makes the Gaussian's sigma half the range of each action dimension (docs/design.md#sigma).

    ``None`` for a space that is not a ``Box``; 0 (sigma = 1, SB3's default) for an unbounded dimension. On the usual
    ``[-1, 1]`` actions (MuJoCo, MountainCarContinuous) this is SB3's default; on Pendulum's ``[-2, 2]`` it is log 2.

    Example::

        >>> from gymnasium import spaces
        >>> action_range_log_std(spaces.Box(-2.0, 2.0, (1,))).exp()
        tensor([2.])
    """
    if not isinstance(action_space, spaces.Box):
        return None
    low, high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in (action_space.low, action_space.high))
    half = np.where(np.isfinite(low) & np.isfinite(high) & (high > low), (high - low) / 2, 1.0)
    return th.as_tensor(np.log(half), dtype=th.float32)


def init_log_std_(policy: ActorCriticPolicy, log_std_init: float | None) -> None:
    """Set a diagonal Gaussian's initial log-std: ``log_std_init``, or half the action range when it is ``None``.

    The critic-free defaults (docs/design.md#sigma): a Monte-Carlo policy gradient explores only through sigma, and
    SB3's sigma = 1 is a quarter of Pendulum's torque range. gSDE's log-std (noise weights, not action units) and
    squashed actions keep SB3's 0 when ``None``.
    """
    policy.log_std_init = log_std_init  # type: ignore[assignment]  # saved with the model: None reloads as None
    if log_std_init is not None or not isinstance(policy.action_dist, DiagGaussianDistribution):
        return
    log_std = action_range_log_std(policy.action_space)
    if log_std is not None:
        with th.no_grad():
            policy.log_std.copy_(log_std.to(policy.log_std.device))


class ActorOnlyPolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` without a critic (same arguments; ``net_arch`` may be a list or ``dict(pi=[...])``).

    ``share_features_extractor`` is accepted either way and means nothing here: there is only one network (no critic to
    share the features extractor with). ``log_std_init=None`` (the default) starts a Gaussian's sigma at half the action
    range (:func:`init_log_std_`); a float is SB3's meaning.
    """

    def __init__(self, *args: Any, log_std_init: float | None = None, **kwargs: Any) -> None:
        kwargs["share_features_extractor"] = True  # nothing to share: one extractor, the actor's
        net_arch = kwargs.get("net_arch")
        if isinstance(net_arch, dict):
            if set(net_arch) - {"pi", "vf"}:
                raise ValueError(f"net_arch keys must be 'pi' (and an ignored 'vf'), got {sorted(net_arch)}.")
            kwargs["net_arch"] = list(net_arch.get("pi", []))
        super().__init__(*args, log_std_init=0.0 if log_std_init is None else log_std_init, **kwargs)
        init_log_std_(self, log_std_init)

    def _build_mlp_extractor(self) -> None:
        pi = self.net_arch.get("pi", []) if isinstance(self.net_arch, dict) else self.net_arch
        self.net_arch = list(pi)
        self.mlp_extractor = MlpExtractor(
            self.features_dim, net_arch=dict(pi=list(pi), vf=[]), activation_fn=self.activation_fn, device=self.device
        )

    def _build(self, lr_schedule) -> None:  # type: ignore[no-untyped-def]
        super()._build(lr_schedule)
        # Drop the critic that the parent built, then re-create the optimizer on actor parameters only.
        del self.value_net
        self.value_net = None  # type: ignore[assignment]
        if self.ortho_init:
            for module, gain in {
                self.features_extractor: np.sqrt(2),
                self.mlp_extractor: np.sqrt(2),
                self.action_net: 0.01,
            }.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _actor_latent(self, obs: PyTorchObs) -> th.Tensor:
        features = super(ActorCriticPolicy, self).extract_features(obs, self.features_extractor)
        return self.mlp_extractor.forward_actor(features)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Sample actions; returns ``(actions, zeros in place of values, log_prob)``."""
        try:  # (torch's argument validation may be off: then the sampling is what fails on NaN)
            distribution = self._get_action_dist_from_latent(self._actor_latent(obs))
            actions = distribution.get_actions(deterministic=deterministic)
        except (RuntimeError, ValueError) as error:
            raise explain_non_finite_observations(obs, error) from error
        log_prob = distribution.log_prob(actions)
        values = th.zeros(log_prob.shape[0], 1, device=log_prob.device)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob  # type: ignore[misc]

    def sample_actions(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor]:
        """``(actions, log_prob)``: ``forward`` without the zeros (what the collection loop calls at every step)."""
        actions, _, log_prob = self.forward(obs, deterministic)
        return actions, log_prob

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """``(zeros in place of values, log_prob, entropy)`` of ``actions``."""
        distribution = self._get_action_dist_from_latent(self._actor_latent(obs))
        log_prob = distribution.log_prob(actions)
        return th.zeros_like(log_prob)[:, None], log_prob, distribution.entropy()

    def get_distribution(self, obs: PyTorchObs):  # type: ignore[no-untyped-def]
        """The action distribution at ``obs``."""
        return self._get_action_dist_from_latent(self._actor_latent(obs))

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """A critic-free policy has no values: returns zeros (only used by SB3's bootstrap of truncated episodes)."""
        n = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
        return th.zeros(n, 1, device=self.device)


class ActorOnlyCnnPolicy(ActorOnlyPolicy):
    """:class:`ActorOnlyPolicy` with SB3's ``NatureCNN`` features extractor."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)


class ActorOnlyMultiInputPolicy(ActorOnlyPolicy):
    """:class:`ActorOnlyPolicy` for ``Dict`` observation spaces (SB3's ``CombinedExtractor``)."""

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Space, lr_schedule, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)
