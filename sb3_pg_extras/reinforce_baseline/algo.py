"""REINFORCE with a learned baseline ``V(s)`` (Williams 1992; Sutton & Barto 13.4; docs/maths.md#3-baselines-and-gae)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import FloatSchedule, update_learning_rate

from pg_extras import explained_variance, regress_critic, standardize
from pg_extras.validation import check_bool, check_int, check_rate_or_schedule
from sb3_pg_extras.common.episodic import EpisodicOnPolicyAlgorithm
from sb3_pg_extras.reinforce_baseline.policies import BaselineCnnPolicy, BaselineMultiInputPolicy, BaselinePolicy

__all__ = ["REINFORCEWithBaseline"]


class REINFORCEWithBaseline(EpisodicOnPolicyAlgorithm):
    """REINFORCE with a learned state-value baseline (docs/maths.md#3-baselines-and-gae).

    Per rollout, on the complete episodes only (see :class:`~sb3_pg_extras.reinforce.REINFORCE`):

    1. ``G_t`` by :func:`pg_extras.returns_to_go`; ``A_t = G_t - V_phi(s_t)`` with the critic before this update;
    2. one policy step on ``-mean_t(log pi(a_t|s_t) * A_t) - ent_coef * mean_t(H)`` (actor parameters only);
    3. ``n_critic_updates`` epochs of MSE regression of ``V_phi(s_t)`` on ``G_t`` in minibatches of ``batch_size``
       with its own optimizer and learning rate ``vf_learning_rate`` (critic parameters only).

    Baseline invariance (docs/maths.md §3): the expected gradient does not depend on ``V``; the critic only reduces variance.

    :param policy: the policy model to use (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``).
    :param env: the environment to learn from (if registered in Gym, can be str).
    :param learning_rate: actor learning rate, constant or a schedule of the remaining progress (1 -> 0).
    :param n_steps: steps per env per rollout (one update per rollout); best at least one episode length.
    :param batch_size: minibatch size of the critic updates, and chunk size of the (full-batch) actor step.
        ``None``: the whole rollout.
    :param gamma: discount factor.
    :param ent_coef: entropy bonus coefficient (>= 0).
    :param max_grad_norm: gradient-norm clipping of both losses (``None``: no clipping).
    :param normalize_advantage: standardise ``A_t`` over the batch.
    :param vf_learning_rate: critic learning rate, constant or schedule (``None``: same as ``learning_rate``).
    :param n_critic_updates: epochs of critic regression per rollout.
    :param bootstrap_truncated: at a time-limit truncation, end the return with ``gamma * V(s_final)`` instead of
        nothing (the value is computed at collection time); terminations are never bootstrapped.
    :param carry_over: keep unfinished episodes for the next rollout (``False``: drop them, strictly on-policy).
    :param max_episode_steps: error when an episode runs longer than this without ending (default
        ``max(10 * n_steps, 10_000)``).
    :param use_sde: generalised State-Dependent Exploration (continuous actions).
    :param sde_sample_freq: sample a new gSDE noise matrix every n steps (-1: once per rollout).
    :param stats_window_size: episodes averaged for the rollout logs.
    :param tensorboard_log: tensorboard log folder (None: no tensorboard).
    :param policy_kwargs: keyword arguments of the policy (e.g. ``net_arch=dict(pi=[64, 64], vf=[64, 64])``).
    :param verbose: 0 silent, 1 info, 2 debug.
    :param seed: seed of the pseudo random generators.
    :param device: ``cpu``, ``cuda`` or ``auto``.
    :param _init_setup_model: build the network at construction.

    Example::

        >>> from sb3_pg_extras import REINFORCEWithBaseline
        >>> model = REINFORCEWithBaseline("MlpPolicy", "CartPole-v1", n_steps=256, vf_learning_rate=1e-3, seed=0)
        >>> model = model.learn(512)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": BaselinePolicy,
        "CnnPolicy": BaselineCnnPolicy,
        "MultiInputPolicy": BaselineMultiInputPolicy,
    }
    policy: BaselinePolicy

    estimators: ClassVar[tuple[str, ...]] = ("baseline",)

    def __init__(
        self,
        policy: str | type[BaselinePolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-3,
        n_steps: int = 1024,
        batch_size: int | None = 256,
        gamma: float = 0.99,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = 1.0,
        normalize_advantage: bool = True,
        vf_learning_rate: float | Schedule | None = 1e-3,
        n_critic_updates: int = 5,
        bootstrap_truncated: bool = False,
        carry_over: bool = True,
        max_episode_steps: int | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if vf_learning_rate is not None:
            check_rate_or_schedule("vf_learning_rate", vf_learning_rate)
        check_int("n_critic_updates", n_critic_updates, 1, hint="the critic needs at least one epoch per rollout")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            ent_coef=ent_coef,
            max_grad_norm=max_grad_norm,
            batch_size=batch_size,
            carry_over=carry_over,
            max_episode_steps=max_episode_steps,
            advantage_estimator="baseline",
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
        self.vf_learning_rate = vf_learning_rate
        self.n_critic_updates = n_critic_updates
        self.bootstrap_truncated = check_bool("bootstrap_truncated", bootstrap_truncated)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self.vf_lr_schedule = FloatSchedule(self.learning_rate if self.vf_learning_rate is None else self.vf_learning_rate)
        if not hasattr(self.policy, "vf_optimizer"):
            raise ValueError(
                f"REINFORCEWithBaseline needs a policy with a separate critic optimizer, got {type(self.policy).__name__}: "
                "use its MlpPolicy/CnnPolicy/MultiInputPolicy or subclass sb3_pg_extras.reinforce_baseline.BaselinePolicy."
            )

    def _values(self, observations: th.Tensor | dict[str, th.Tensor], n: int) -> th.Tensor:
        """``V(s)`` of the batch, without gradient, computed in chunks."""
        with th.no_grad():
            parts = []
            for chunk in self._chunks(n):
                obs = {k: v[chunk] for k, v in observations.items()} if isinstance(observations, dict) else observations[chunk]
                parts.append(self.policy.critic_values(obs))
        return th.cat(parts)

    def train(self) -> None:
        """Policy step on ``A_t = G_t - V(s_t)``, then ``n_critic_updates`` epochs of MSE on ``G_t`` (docs/maths.md#3)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        vf_lr = self.vf_lr_schedule(self._current_progress_remaining)
        update_learning_rate(self.policy.vf_optimizer, vf_lr)
        self.logger.record("train/vf_learning_rate", vf_lr)
        batch = self._training_episodes()
        if batch is None:
            return
        n = batch.num_steps
        values = self._values(batch.observations, n)
        estimate = self._advantages(batch, values)
        returns = estimate.returns
        advantages = standardize(estimate.advantages) if self.normalize_advantage else estimate.advantages
        self._policy_gradient_step(batch, advantages, self.policy.actor_parameters)

        value_losses = regress_critic(
            lambda index: self.policy.critic_values(batch.take(index).observations),
            returns,
            self.policy.vf_optimizer,
            self.n_critic_updates,
            self.batch_size or n,
            parameters=self.policy.critic_parameters(),
            max_grad_norm=self.max_grad_norm,
            permutation=lambda size: th.as_tensor(np.random.permutation(size), device=self.device),  # SB3's shuffle
        )

        self._finish_update()
        self.logger.record("train/value_loss", float(np.mean(value_losses)))
        self.logger.record("train/explained_variance", explained_variance(values, returns))
        self.logger.record("train/return_mean", returns.mean().item())

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "policy.vf_optimizer"], []
