"""Group Relative Policy Optimization (GRPO) as a Stable-Baselines3 on-policy algorithm.

docs/maths.md#6-grpo; DeepSeekMath (Shao et al. 2024, arXiv:2402.03300) for the objective, DAPO (Yu et al. 2025,
arXiv:2503.14476) for ``clip_range_high`` and token-level aggregation, Dr. GRPO (Liu et al. 2025, arXiv:2503.20783)
for ``advantage_scale="none"`` and ``loss_aggregation="dr_grpo"``, RLOO (Ahmadian et al. 2024, arXiv:2402.14740)
for the leave-one-out baseline.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.common.vec_env import VecEnv

from pg_extras import (
    LOSS_AGGREGATIONS,
    EpisodeLayout,
    aggregate_loss,
    kl_estimate,
    policy_loss,
    regularized_loss,
    standardize,
)
from pg_extras.validation import check_choice, check_float, check_int
from sb3_pg_extras.common.buffers import EpisodeBatch, episode_minibatches
from sb3_pg_extras.common.episodic import EpisodicOnPolicyAlgorithm
from sb3_pg_extras.common.policies import ActorOnlyCnnPolicy, ActorOnlyMultiInputPolicy, ActorOnlyPolicy

__all__ = ["GRPO"]

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")


def _check_clip(name: str, value: float | Schedule | None, allow_none: bool) -> None:
    if callable(value):
        for progress in (1.0, 0.0):
            check_float(f"{name}({progress})", value(progress), 0.0, hint=f"{name} schedules return values >= 0")
        return
    check_float(name, value, 0.0, low_inclusive=False, allow_none=allow_none, hint="e.g. 0.2, or a schedule")


class GRPO(EpisodicOnPolicyAlgorithm):
    """Group Relative Policy Optimization (docs/maths.md#6-grpo): critic-free PPO-clip on group-relative advantages.

    A *group* is ``group_size`` episodes that start from the same reset seed (the same initial state for deterministic
    dynamics). The :class:`pg_extras.GroupScheduler` hands the members out to the envs as they become free, so any
    number of envs works (one env plays the members one after another) and no env waits for another
    (``group_schedule="lockstep"``: the older rounds). A rollout is ``n_steps`` steps per env, as in SB3; the update
    uses the groups completed so far, and the unfinished ones are carried over with their behaviour log-probs, so
    the importance ratio stays exact. The policy maximises the clipped surrogate minus ``beta * KL(pi || pi_ref)``
    (k3 estimator), aggregated over the variable-length episodes by ``loss_aggregation``.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an ``ActorOnlyPolicy`` subclass (no critic).
    :param env: the environment (any ``VecEnv``, a gym env, or an env id: then ``n_envs`` copies are made).
    :param learning_rate: learning rate, a float or a schedule of the progress remaining (1 -> 0).
    :param n_steps: steps per env per rollout (one update per rollout, on the groups completed by then).
    :param batch_size: about how many steps a mini-batch holds; mini-batches are made of whole, shuffled episodes
        so that ``loss_aggregation`` is exact per mini-batch. ``None``: the whole rollout in one mini-batch.
    :param n_epochs: passes over the rollout per update.
    :param gamma: discount of the returns used by the advantages (GRPO's default: undiscounted, 1.0).
    :param group_size: ``G``, episodes per group (>= 2); any number of envs works.
    :param n_envs: number of envs to make when ``env`` is an id (default: ``group_size``).
    :param advantage_mode: ``"outcome"``, ``"process"`` or ``"return_to_go"`` (docs/maths.md#6-grpo).
    :param advantage_scale: ``"group"`` (GRPO), ``"batch"`` or ``"none"`` (Dr. GRPO).
    :param rloo: leave-one-out baseline ``r_i - mean_{j != i} r_j`` instead of the group mean.
    :param clip_range: PPO clipping ``eps`` (``eps_low`` with ``clip_range_high``), a float > 0 or a schedule.
    :param clip_range_high: DAPO clip-higher ``eps_high`` (float or schedule); ``None``: same as ``clip_range``.
    :param beta: weight of ``KL(pi || pi_ref)`` (k3 estimator) in the loss, >= 0 (0: no KL penalty).
    :param ref_update_interval: copy the policy into the reference policy every this many gradient steps
        (``None``: the reference stays the initial policy).
    :param loss_aggregation: ``"grpo"``, ``"bnpo"`` / ``"dapo"`` or ``"dr_grpo"`` (docs/maths.md#8-loss-aggregation).
    :param ent_coef: entropy bonus coefficient.
    :param max_grad_norm: gradient clipping (``None``: no clipping).
    :param target_kl: stop the epochs of an update early when the approximate ``KL(pi_old || pi)`` of a mini-batch
        exceeds ``1.5 * target_kl`` (as SB3's PPO). ``None``: no limit.
    :param group_schedule: ``"async"`` (default) or ``"lockstep"``.
    :param max_policy_lag: drop groups whose members span more than this many updates (``None``: no bound).
    :param max_episode_steps: raise when an episode runs this many steps without ending.
    :param advantage_estimator: ``"group"`` (GRPO) or ``"mc"`` (critic-free PPO-clip on standardised Monte-Carlo
        returns-to-go, no groups).
    Other parameters: as SB3's PPO (``use_sde``, ``sde_sample_freq``, ``stats_window_size``, ``tensorboard_log``,
    ``policy_kwargs``, ``verbose``, ``seed``, ``device``, ``_init_setup_model``).

    Example::

        >>> from sb3_pg_extras import GRPO
        >>> model = GRPO("MlpPolicy", "CartPole-v1", group_size=4, n_steps=64, seed=0)
        >>> model.learn(1_000)  # doctest: +ELLIPSIS
        <sb3_pg_extras.grpo.algo.GRPO object at ...>
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorOnlyPolicy,
        "CnnPolicy": ActorOnlyCnnPolicy,
        "MultiInputPolicy": ActorOnlyMultiInputPolicy,
    }
    estimators: ClassVar[tuple[str, ...]] = ("group", "mc")
    policy: ActorOnlyPolicy
    ref_policy: ActorOnlyPolicy

    def __init__(
        self,
        policy: str | type[ActorOnlyPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 256,
        batch_size: int | None = None,
        n_epochs: int = 4,
        gamma: float = 1.0,
        group_size: int = 8,
        n_envs: int | None = None,
        advantage_mode: str = "outcome",
        advantage_scale: str = "group",
        rloo: bool = False,
        clip_range: float | Schedule = 0.2,
        clip_range_high: float | Schedule | None = None,
        beta: float = 0.0,
        ref_update_interval: int | None = None,
        loss_aggregation: str = "grpo",
        ent_coef: float = 0.0,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        group_schedule: str = "async",
        max_policy_lag: int | None = 16,
        max_episode_steps: int | None = None,
        advantage_estimator: str = "group",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if isinstance(policy, str):
            check_choice("policy", policy, tuple(self.policy_aliases))
        elif not (isinstance(policy, type) and issubclass(policy, ActorOnlyPolicy)):
            raise ValueError(
                f"policy={policy!r}: GRPO is critic-free, pass 'MlpPolicy', 'CnnPolicy', 'MultiInputPolicy' or a "
                "subclass of sb3_pg_extras.common.policies.ActorOnlyPolicy."
            )
        check_int("n_envs", n_envs, 1, allow_none=True)
        check_int("n_epochs", n_epochs, 1)
        check_int("ref_update_interval", ref_update_interval, 1, allow_none=True, hint="None: a frozen reference")
        check_choice("loss_aggregation", loss_aggregation, LOSS_AGGREGATIONS)
        _check_clip("clip_range", clip_range, allow_none=False)
        _check_clip("clip_range_high", clip_range_high, allow_none=True)
        check_float("beta", beta, 0.0, hint="the weight of the KL penalty; 0 disables it")
        check_float("target_kl", target_kl, 0.0, low_inclusive=False, allow_none=True, hint="None: no early stopping")
        if isinstance(env, str):
            check_int("group_size", group_size, 2)
            env = make_vec_env(env, n_envs=group_size if n_envs is None else n_envs)
        elif isinstance(env, VecEnv) and n_envs is not None and n_envs != env.num_envs:
            raise ValueError(
                f"n_envs={n_envs} but the given VecEnv has {env.num_envs} envs: n_envs is only used to build the VecEnv "
                "from an env id; remove it or pass a VecEnv with that many envs."
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
            advantage_estimator=advantage_estimator,
            group_size=group_size,
            advantage_mode=advantage_mode,
            advantage_scale=advantage_scale,
            rloo=rloo,
            group_schedule=group_schedule,
            max_policy_lag=max_policy_lag,
            max_episode_steps=max_episode_steps,
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
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_high = clip_range_high
        self.beta = beta
        self.ref_update_interval = ref_update_interval
        self.loss_aggregation = loss_aggregation
        self.target_kl = target_kl
        self._n_grad_steps = 0
        self._warned_zero_signal = False
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        super()._setup_model()
        self.ref_policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        ).to(self.device)
        self.ref_policy.set_training_mode(False)
        self.ref_policy.requires_grad_(False)
        self._sync_ref_policy()
        self.clip_range = FloatSchedule(self.clip_range)  # type: ignore[arg-type]
        if self.clip_range_high is not None:
            self.clip_range_high = FloatSchedule(self.clip_range_high)  # type: ignore[arg-type]

    def _sync_ref_policy(self) -> None:
        """Copy the current policy into the frozen reference policy ``pi_ref``."""
        self.ref_policy.load_state_dict(self.policy.state_dict())

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "ref_policy"], []

    # ------------------------------------------------------------------ train
    def _warn_if_no_signal(self, advantages: th.Tensor, batch: EpisodeBatch) -> None:
        """Returns differ but every advantage is zero: constant per-step rewards under ``"process"`` (docs/maths.md)."""
        if self.advantage_mode != "process" or self._warned_zero_signal or bool(advantages.any()):
            return
        if float(batch.rewards.sum()) != 0.0 and float(th.unique(batch.lengths).numel()) > 1:
            self._warned_zero_signal = True
            warnings.warn(
                "advantage_mode='process' gave zero advantages although episode returns differ: the per-step rewards "
                "are constant (e.g. CartPole), so process supervision has no signal. Use advantage_mode='outcome' or "
                "'return_to_go'.",
                stacklevel=2,
            )

    def train(self) -> None:
        """Update the policy on the completed groups: ``n_epochs`` passes of mini-batches of whole episodes."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range(progress)  # type: ignore[operator]
        clip_range_high = None if self.clip_range_high is None else self.clip_range_high(progress)  # type: ignore[operator]
        self.logger.record("train/clip_range", clip_range)
        if clip_range_high is not None:
            self.logger.record("train/clip_range_high", clip_range_high)
        batch = self._training_episodes()
        if batch is None:
            self.logger.record("train/skipped_updates", 1)
            return
        advantages = self._advantages(batch).advantages
        if not self.uses_groups:  # Monte-Carlo returns: standardised over the batch, as PPO's normalize_advantage
            advantages = standardize(advantages)
        self._warn_if_no_signal(advantages, batch)
        max_length = int(batch.lengths.max())
        done = batch.terminated | batch.truncated

        pg_losses, entropy_losses, kl_refs, clip_fractions, approx_kl_divs = [], [], [], [], []
        loss = th.zeros(())
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for steps in episode_minibatches(batch.lengths.cpu(), self.batch_size):
                steps = steps.to(self.device)
                part = batch.take(steps)
                layout = EpisodeLayout.from_dones(done[steps])

                def aggregate(per_step: th.Tensor, layout: EpisodeLayout = layout) -> th.Tensor:
                    return aggregate_loss(
                        layout.to_episodes(per_step[:, None]),
                        layout.mask,
                        self.loss_aggregation,
                        max_length=max_length,
                    )

                actions = self._policy_actions(part.actions)
                _, log_prob, entropy = self.policy.evaluate_actions(part.observations, actions)
                surrogate, clipped = policy_loss(
                    "ppo_clip", log_prob, part.old_log_prob, advantages[steps], clip_range, clip_range_high
                )
                with th.no_grad():
                    _, ref_log_prob, _ = self.ref_policy.evaluate_actions(part.observations, actions)
                entropy = -log_prob if entropy is None else entropy  # no closed form: one-sample estimate (SB3's PPO)
                per_step, kl_ref = regularized_loss(surrogate, log_prob, ref_log_prob, entropy, self.beta, self.ent_coef)
                loss = aggregate(per_step)

                with th.no_grad():
                    pg_losses.append(aggregate(surrogate).item())
                    entropy_losses.append(-aggregate(entropy).item())
                    kl_refs.append(aggregate(kl_ref).item())  # type: ignore[arg-type]
                    clip_fractions.append(clipped.float().mean().item())
                    approx_kl = kl_estimate(part.old_log_prob, log_prob.detach(), "k3").mean().item()  # SB3's approx_kl
                    approx_kl_divs.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                if self.max_grad_norm is not None:
                    th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                self._n_grad_steps += 1
                if self.ref_update_interval is not None and self._n_grad_steps % self.ref_update_interval == 0:
                    self._sync_ref_policy()
            if not continue_training:
                break
        self._finish_update()

        self.logger.record("train/entropy_loss", float(np.mean(entropy_losses)))
        self.logger.record("train/policy_gradient_loss", float(np.mean(pg_losses)))
        self.logger.record("train/kl_ref", float(np.mean(kl_refs)))
        self.logger.record("train/approx_kl", float(np.mean(approx_kl_divs)) if approx_kl_divs else 0.0)
        self.logger.record("train/clip_fraction", float(np.mean(clip_fractions)))
        self.logger.record("train/loss", loss.item())
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_gradient_steps", self._n_grad_steps, exclude="tensorboard")

    def learn(
        self: SelfGRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "GRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
