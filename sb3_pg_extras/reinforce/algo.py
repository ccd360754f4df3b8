"""REINFORCE: Monte-Carlo policy gradient without a critic (Williams 1992; docs/maths.md#2-reinforce-and-return-to-go)."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from pg_extras import EpisodeLayout, mask_truncated_episodes, standardize
from pg_extras.validation import check_bool
from sb3_pg_extras.common.episodic import EpisodicOnPolicyAlgorithm
from sb3_pg_extras.common.policies import ActorOnlyCnnPolicy, ActorOnlyMultiInputPolicy, ActorOnlyPolicy

__all__ = ["REINFORCE"]

SelfREINFORCE = TypeVar("SelfREINFORCE", bound="REINFORCE")


class REINFORCE(EpisodicOnPolicyAlgorithm):
    """REINFORCE: ``loss = -mean_t(log pi(a_t|s_t) * G_t) - ent_coef * mean_t(H[pi(.|s_t)])`` (docs/maths.md §2).

    ``G_t = sum_{k >= t} gamma^(k-t) r_k`` is the Monte-Carlo return-to-go of the step's episode, computed by
    :func:`pg_extras.returns_to_go` over *complete* episodes only: an episode still running at the end of a rollout
    is carried over to the next rollout (``carry_over=True``) or dropped, never scored with a made-up return.
    A time-limit truncation ends the return (there is no critic to bootstrap from). The policy has no critic:
    ``MlpPolicy`` etc. are :class:`~sb3_pg_extras.common.policies.ActorOnlyPolicy`. One gradient step per rollout.

    :param policy: the policy model to use (``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``).
    :param env: the environment to learn from (if registered in Gym, can be str).
    :param learning_rate: learning rate, constant or a schedule of the remaining progress (1 -> 0).
    :param n_steps: steps per env per rollout (one update per rollout); best at least one episode length.
    :param batch_size: steps per forward/backward chunk (memory only: the gradient is accumulated over the batch).
    :param gamma: discount factor.
    :param ent_coef: entropy bonus coefficient (>= 0).
    :param max_grad_norm: gradient-norm clipping (``None``: no clipping).
    :param normalize_advantage: standardise the advantages ``G_t`` over the batch, ``(G - mean) / std`` (SB3's name, as
        in A2C / PPO): a constant baseline plus a step-size scale (docs/maths.md §3 shows the baseline leaves the
        gradient unbiased); ``False``: the plain loss. Default ``True``. Group advantages are normalised already.
    :param normalize_returns: the earlier name of ``normalize_advantage`` (still accepted; give one of the two).
    :param carry_over: keep unfinished episodes for the next rollout (``False``: drop them, strictly on-policy).
    :param max_episode_steps: error when an episode runs longer than this without ending (default
        ``max(10 * n_steps, 10_000)``).
    :param advantage_estimator: ``"mc"`` (returns-to-go ``G_t``) or ``"group"`` (group-relative advantages of
        ``group_size`` episodes from one reset seed, docs/maths.md#6-grpo: group-relative REINFORCE).
    :param group_size: episodes per group (``advantage_estimator="group"``).
    :param advantage_mode: group advantages: ``"outcome"``, ``"process"``, ``"return_to_go"``, ``"reinforce_pp"``,
        ``"reinforce_pp_baseline"`` (REINFORCE++), ``"opo"`` or ``"remax"`` (ReMax: one extra greedy episode per group,
        its return is the baseline; docs/maths.md#12-variants).
    :param advantage_scale: group advantages: ``"group"``, ``"batch"``, ``"none"`` or ``"gpg"``.
    :param rloo: group advantages: leave-one-out baseline.
    :param group_schedule: ``"async"`` or ``"lockstep"`` (see :class:`~sb3_pg_extras.GRPO`).
    :param mask_truncated_completions: leave the episodes that ended by truncation out of the gradient (TRL's option,
        docs/maths.md#12-variants): their return was cut by the time limit and, without a critic, is not bootstrapped.
        They still count in the return normalisation and the group statistics.
    :param use_sde: generalised State-Dependent Exploration (continuous actions).
    :param sde_sample_freq: sample a new gSDE noise matrix every n steps (-1: once per rollout).
    :param stats_window_size: episodes averaged for the rollout logs.
    :param tensorboard_log: tensorboard log folder (None: no tensorboard).
    :param policy_kwargs: keyword arguments of the policy (e.g. ``net_arch=[64, 64]``).
    :param verbose: 0 silent, 1 info, 2 debug.
    :param seed: seed of the pseudo random generators.
    :param device: ``cpu``, ``cuda`` or ``auto``.
    :param _init_setup_model: build the network at construction.

    Example::

        >>> from sb3_pg_extras import REINFORCE
        >>> model = REINFORCE("MlpPolicy", "CartPole-v1", n_steps=256, learning_rate=1e-2, seed=0)
        >>> any("value" in name for name, _ in model.policy.named_parameters())
        False
        >>> model = model.learn(512)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorOnlyPolicy,
        "CnnPolicy": ActorOnlyCnnPolicy,
        "MultiInputPolicy": ActorOnlyMultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorOnlyPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-3,
        n_steps: int = 1024,
        batch_size: int | None = None,
        gamma: float = 0.99,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = 1.0,
        normalize_advantage: bool | None = None,
        carry_over: bool = True,
        max_episode_steps: int | None = None,
        advantage_estimator: str = "mc",
        group_size: int | None = None,
        advantage_mode: str = "outcome",
        advantage_scale: str = "group",
        rloo: bool = False,
        group_schedule: str = "async",
        mask_truncated_completions: bool = False,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        normalize_returns: bool | None = None,
    ) -> None:
        normalize_advantage = check_bool("normalize_advantage", normalize_advantage, allow_none=True)
        normalize_returns = check_bool("normalize_returns", normalize_returns, allow_none=True)
        if None not in (normalize_advantage, normalize_returns) and normalize_advantage != normalize_returns:
            raise ValueError(
                f"normalize_advantage={normalize_advantage} and normalize_returns={normalize_returns}: they are one option "
                "(normalize_returns is its earlier name): pass only normalize_advantage."
            )
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
            advantage_estimator=advantage_estimator,
            group_size=group_size,
            advantage_mode=advantage_mode,
            advantage_scale=advantage_scale,
            rloo=rloo,
            group_schedule=group_schedule,
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
        self.normalize_advantage = next((v for v in (normalize_advantage, normalize_returns) if v is not None), True)
        self.mask_truncated_completions = check_bool("mask_truncated_completions", mask_truncated_completions)
        if _init_setup_model:
            self._setup_model()

    @property
    def normalize_returns(self) -> bool:
        """The earlier name of :attr:`normalize_advantage`."""
        return self.normalize_advantage

    @normalize_returns.setter
    def normalize_returns(self, value: bool) -> None:
        self.normalize_advantage = check_bool("normalize_returns", value)

    def _setup_model(self) -> None:
        legacy = self.__dict__.pop("normalize_returns", None)  # a model saved under the earlier name (load)
        if legacy is not None:
            self.normalize_advantage = bool(legacy)
        super()._setup_model()
        critic = [name for name, _ in self.policy.named_parameters() if "value" in name]
        if critic:
            raise ValueError(
                f"REINFORCE is critic-free but policy {type(self.policy).__name__} has value parameters {critic}: "
                "use REINFORCE's MlpPolicy/CnnPolicy/MultiInputPolicy, or REINFORCEWithBaseline for a learned baseline."
            )

    def train(self) -> None:
        """One policy-gradient step on the whole episodes of the rollout, weighted by ``G_t`` (docs/maths.md#2)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        batch = self._training_episodes()
        if batch is None:
            return
        estimate = self._advantages(batch)
        self.logger.record("train/return_mean", estimate.returns.mean().item())
        weights = estimate.advantages
        if self.normalize_advantage and self.advantage_estimator == "mc":  # group advantages are normalised already
            weights = standardize(weights)
        if self.mask_truncated_completions:
            layout = EpisodeLayout.from_dones(batch.terminated | batch.truncated)
            in_loss = layout.to_steps(mask_truncated_episodes(layout.mask, layout.to_episodes(batch.truncated[:, None])))
            steps = th.nonzero(in_loss[:, 0]).squeeze(1)
            self.logger.record("train/n_steps_masked", int(batch.num_steps - steps.numel()))
            self.signal_monitor.observe("all_truncated_masked", steps.numel() == 0, immediate=True)
            if steps.numel() == 0:  # every episode was truncated: nothing to learn from
                self.logger.record("train/skipped_updates", 1)
                return
            batch, weights = batch.take(steps), weights[steps]
        self._policy_gradient_step(batch, weights)
        self._finish_update()

    def learn(
        self: SelfREINFORCE,
        total_timesteps: int,
        callback: Any = None,
        log_interval: int = 1,
        tb_log_name: str = "REINFORCE",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfREINFORCE:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
