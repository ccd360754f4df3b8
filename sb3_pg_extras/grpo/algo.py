"""Group Relative Policy Optimization (GRPO) as a Stable-Baselines3 on-policy algorithm.

docs/maths.md#6-grpo; DeepSeekMath (Shao et al. 2024, arXiv:2402.03300) for the objective, DAPO (Yu et al. 2025,
arXiv:2503.14476) for ``clip_range_high``, token-level aggregation and dynamic sampling, Dr. GRPO (Liu et al. 2025,
arXiv:2503.20783) for ``advantage_scale="none"`` and ``loss_aggregation="dr_grpo"``, RLOO (Ahmadian et al. 2024,
arXiv:2402.14740) for the leave-one-out baseline; the other variants (GSPO, two-sided and dual clip, CISPO, SAPO,
REINFORCE++, OPO, GPG, truncation and entropy masks, KL estimators, reference mixing) are in
docs/maths.md#12-variants, each one core function or option that ``train`` calls.
"""

from __future__ import annotations

import dataclasses
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
    OBJECTIVE_OPTION_NAMES,
    RATIO_RULES,
    EpisodeLayout,
    ObjectiveOptionAttributes,
    ObjectiveOptions,
    aggregate_loss,
    entropy_or_estimate,
    episode_returns,
    informative_groups,
    mask_truncated_episodes,
    mix_parameters_,
    policy_objective,
    standardize,
)
from pg_extras.validation import check_bool, check_choice, check_float, check_int
from pg_extras.variants import check_return_bounds
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


class GRPO(ObjectiveOptionAttributes, EpisodicOnPolicyAlgorithm):
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
    :param n_envs: number of envs to make when ``env`` is an id (default 1, as SB3 does for an id: the members of a
        group then play one after another; pass e.g. ``n_envs=group_size`` to play them side by side).
    :param advantage_mode: ``"outcome"``, ``"process"`` or ``"return_to_go"`` (docs/maths.md#6-grpo);
        ``"reinforce_pp"`` / ``"reinforce_pp_baseline"`` (REINFORCE++: returns-to-go whitened over the batch, after
        the group's per-step mean for ``-baseline``), ``"opo"`` (OPO's length-weighted baseline) or ``"remax"`` (ReMax:
        one extra episode per group played with the deterministic action from the group's seed, not trained on; its
        return is the baseline, docs/maths.md#remax; it costs env steps and ignores ``advantage_scale``).
    :param advantage_scale: ``"group"`` (GRPO), ``"batch"``, ``"none"`` (Dr. GRPO) or ``"gpg"`` (GPG: no std, times
        ``B / #(R != 0)``); the REINFORCE++ modes whiten themselves and ignore it.
    :param rloo: leave-one-out baseline ``r_i - mean_{j != i} r_j`` instead of the group mean.
    :param clip_range: PPO clipping ``eps`` (``eps_low`` with ``clip_range_high``), a float > 0 or a schedule.
    :param clip_range_high: DAPO clip-higher ``eps_high`` (float or schedule); ``None``: same as ``clip_range``.
    :param beta: weight of ``KL(pi || pi_ref)`` (``kl_estimator``) in the loss, >= 0 (0: no KL penalty).
    :param ref_update_interval: refresh the reference policy every this many gradient steps (TRL's
        ``ref_model_sync_steps``; ``None``: the reference stays the initial policy).
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
    :param normalize_advantage: SB3's name (A2C / PPO): ``None`` (default) keeps the estimator's own normalisation
        (group advantages scaled by ``advantage_scale``; ``"mc"`` returns standardised over the batch); ``True``
        also standardises the group advantages over the batch (PPO's ``normalize_advantage``); ``False`` leaves the
        ``"mc"`` returns-to-go unstandardised (the group advantages keep ``advantage_scale``).
    :param update_rule: ``"ppo_clip"`` (default), ``"cispo"`` (``-sg(min(rho, 1 + eps_high)) A log pi``, MiniMax-M1;
        the cap is ``1 + clip_range_high``, TRL's ``epsilon_high`` with ``loss_type="cispo"``) or ``"sapo"`` (SAPO's
        soft gate ``-(4 / tau) sigmoid(tau (rho - 1)) A``).
    :param importance_sampling_level: ``"token"`` (one ratio per step) or ``"sequence"`` (GSPO: one ratio per episode,
        ``exp(mean_t(log pi - log pi_old))``, clipped at the episode level).
    :param delta: two-sided clip (INTELLECT-2, TRL ``delta``): the unclipped ratio is capped at ``delta > 1`` (best
        above ``1 + clip_range_high``), which bounds the loss of negative-advantage steps; ``None``: off.
    :param clip_ratio_c: dual clip (verl ``clip_ratio_c``): the loss of a step with ``A < 0`` is at most ``-c A``,
        ``c > 1`` (e.g. 3.0); ``None``: off.
    :param sapo_temperature_pos: SAPO's temperature for ``A > 0``.
    :param sapo_temperature_neg: SAPO's temperature for ``A <= 0``.
    :param kl_estimator: estimator of ``KL(pi || pi_ref)``: ``"k1"``, ``"k2"``, ``"k3"`` (default) or ``"k3+"`` (``k3``'s
        value with ``k2``'s gradient, verl's ``low_var_kl+``).
    :param use_bias_correction_kl: weight the per-step KL by the importance ratio ``pi / pi_old`` (TRL, DeepSeek-V3.2).
    :param ref_model_mixup_alpha: the reference refresh is ``pi_ref <- alpha pi + (1 - alpha) pi_ref`` (TR-DPO, TRL's
        ``ref_model_mixup_alpha``); 1.0 (default) is the hard copy. Needs ``ref_update_interval``.
    :param dynamic_sampling: DAPO's dynamic sampling: train only on the groups whose returns differ (the others are
        dropped before the update and counted in ``rollout/groups_filtered``; the buffer keeps collecting).
    :param keep_return_bounds: ``(low, high)``: also drop the groups whose mean return is outside ``[low, high]``
        (TorchRL's ``keep_return_bounds``; either may be ``None``).
    :param mask_truncated_completions: leave the episodes that ended by truncation out of the loss (TRL's option);
        they still count in the group statistics of their group.
    :param top_entropy_quantile: keep in the policy-gradient term only the steps whose entropy is in the top fraction
        of the mini-batch, in ``(0, 1]`` (TRL's option; 1.0: every step).
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
        update_rule: str = "ppo_clip",
        importance_sampling_level: str = "token",
        delta: float | None = None,
        clip_ratio_c: float | None = None,
        sapo_temperature_pos: float = 1.0,
        sapo_temperature_neg: float = 1.05,
        kl_estimator: str = "k3",
        use_bias_correction_kl: bool = False,
        ref_model_mixup_alpha: float = 1.0,
        dynamic_sampling: bool = False,
        keep_return_bounds: tuple[float | None, float | None] | None = None,
        mask_truncated_completions: bool = False,
        top_entropy_quantile: float = 1.0,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        normalize_advantage: bool | None = None,
    ):
        self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage, allow_none=True)
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
        _check_clip("clip_range", clip_range, allow_none=False)
        _check_clip("clip_range_high", clip_range_high, allow_none=True)
        check_float("beta", beta, 0.0, hint="the weight of the KL penalty; 0 disables it")
        check_float("target_kl", target_kl, 0.0, low_inclusive=False, allow_none=True, hint="None: no early stopping")
        # checked once (pg_extras.ObjectiveOptions); GRPO takes the rules that clip or gate the ratio
        objective_options = ObjectiveOptions.from_arguments(locals(), update_rules=RATIO_RULES)
        self._check_variants(
            ref_model_mixup_alpha=ref_model_mixup_alpha,
            ref_update_interval=ref_update_interval,
            dynamic_sampling=dynamic_sampling,
            keep_return_bounds=keep_return_bounds,
            advantage_estimator=advantage_estimator,
        )
        if isinstance(env, str):
            check_int("group_size", group_size, 2)
            env = make_vec_env(env, n_envs=1 if n_envs is None else n_envs)  # one env by default, as SB3
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
        self.target_kl = target_kl
        #: the checked options of the objective (pg_extras.policy_objective); the attributes below read and set them
        self.objective_options = objective_options
        self.ref_model_mixup_alpha = float(ref_model_mixup_alpha)
        self.dynamic_sampling = bool(dynamic_sampling)
        self.keep_return_bounds = check_return_bounds(keep_return_bounds)
        self.groups_filtered = 0  # groups dropped by dynamic sampling (cumulative)
        self._n_grad_steps = 0
        self._warned_zero_signal = False
        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_variants(**kw: Any) -> None:
        """Argument checks of the reference and group-filter variants of docs/maths.md#12-variants (the objective's
        own options are checked by :class:`pg_extras.ObjectiveOptions`)."""
        alpha = check_float("ref_model_mixup_alpha", kw["ref_model_mixup_alpha"], 0.0, 1.0, hint="1.0: a hard copy")
        if alpha != 1.0 and kw["ref_update_interval"] is None:
            raise ValueError(
                f"ref_model_mixup_alpha={alpha} mixes the policy into the reference at each refresh, but "
                "ref_update_interval=None never refreshes it: set ref_update_interval (TRL's ref_model_sync_steps)."
            )
        check_bool("dynamic_sampling", kw["dynamic_sampling"])
        bounds = check_return_bounds(kw["keep_return_bounds"])
        if (kw["dynamic_sampling"] or bounds is not None) and kw["advantage_estimator"] != "group":
            raise ValueError("dynamic_sampling / keep_return_bounds filter groups: they need advantage_estimator='group'.")

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        super()._setup_model()
        legacy = {name: self.__dict__.pop(name) for name in OBJECTIVE_OPTION_NAMES if name in self.__dict__}
        if legacy:  # a model saved before the options object, or GRPO.load(path, update_rule=...): re-checked here
            self.objective_options = dataclasses.replace(self.objective_options, **legacy)
        self.ref_policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        ).to(self.device)
        self.ref_policy.set_training_mode(False)
        self.ref_policy.requires_grad_(False)
        self._sync_ref_policy(alpha=1.0)
        self.clip_range = FloatSchedule(self.clip_range)  # type: ignore[arg-type]
        if self.clip_range_high is not None:
            self.clip_range_high = FloatSchedule(self.clip_range_high)  # type: ignore[arg-type]

    def _sync_ref_policy(self, alpha: float | None = None) -> None:
        """Refresh ``pi_ref <- alpha pi + (1 - alpha) pi_ref`` (``ref_model_mixup_alpha``; 1.0: a hard copy)."""
        alpha = self.ref_model_mixup_alpha if alpha is None else alpha
        if alpha >= 1.0:
            self.ref_policy.load_state_dict(self.policy.state_dict())
            return
        ref, pi = self.ref_policy.state_dict(), self.policy.state_dict()
        mix_parameters_(ref.values(), (pi[name] for name in ref), alpha)

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

    def _fresh_sample_log_prob(self, observations: Any) -> th.Tensor:
        """``log pi(a~|s)`` of a fresh action (the entropy estimate of :func:`pg_extras.entropy_or_estimate`)."""
        distribution = self.policy.get_distribution(observations)
        return distribution.log_prob(distribution.sample())

    def _informative_episodes(self, batch: EpisodeBatch) -> EpisodeBatch | None:
        """DAPO's dynamic sampling: the episodes of the groups with a signal (:func:`pg_extras.informative_groups`).

        The dropped groups are counted in ``rollout/groups_filtered`` (cumulative) and
        ``rollout/frac_groups_filtered`` (this rollout); ``None`` when no group is left.
        """
        layout = EpisodeLayout.from_dones(batch.terminated | batch.truncated)
        returns = episode_returns(batch.rewards, batch.terminated | batch.truncated, gamma=self.gamma)
        group_ids = batch.group[layout.start_step]
        keep, dropped = informative_groups(returns, group_ids, self.keep_return_bounds, drop_zero_spread=self.dynamic_sampling)
        self.groups_filtered += dropped
        n_groups = int(th.unique(group_ids).numel())
        self.logger.record("rollout/groups_filtered", self.groups_filtered)
        self.logger.record("rollout/frac_groups_filtered", dropped / max(n_groups, 1))
        if not bool(keep.any()):
            return None
        if bool(keep.all()):
            return batch
        steps = th.nonzero(layout.step_mask(keep)[:, 0]).squeeze(1)
        return batch.take(steps)._replace(lengths=batch.lengths[keep])

    def _minibatch_loss(
        self,
        part: EpisodeBatch,
        advantages: th.Tensor,
        layout: EpisodeLayout,
        clip_range: float,
        clip_range_high: float | None,
        max_length: int,
    ) -> tuple[th.Tensor, dict[str, float]]:
        """The loss of one mini-batch of whole episodes (``layout``) and its diagnostics.

        Per step, :func:`pg_extras.policy_objective` with ``objective_options``: the update rule's surrogate (masked to
        the high-entropy steps with ``top_entropy_quantile``), ``beta * KL(pi || pi_ref)`` and the entropy bonus; then
        aggregated over the episodes kept in the loss (``loss_aggregation``; ``mask_truncated_completions`` leaves out
        the truncated episodes).
        """
        loss_mask = layout.mask  # [E, L]: the steps in the loss
        if self.mask_truncated_completions:
            loss_mask = mask_truncated_episodes(loss_mask, layout.to_episodes(part.truncated[:, None]))

        def aggregate(per_step: th.Tensor) -> th.Tensor:
            return aggregate_loss(
                layout.to_episodes(per_step[:, None]), loss_mask, self.loss_aggregation, max_length=max_length
            )

        actions = self._policy_actions(part.actions)
        _, log_prob, entropy = self.policy.evaluate_actions(part.observations, actions)
        with th.no_grad():
            _, ref_log_prob, _ = self.ref_policy.evaluate_actions(part.observations, actions)
        terms = policy_objective(
            self.objective_options,
            log_prob,
            part.old_log_prob,
            advantages,
            clip_range=clip_range,
            clip_range_high=clip_range_high,
            beta=self.beta,
            ent_coef=self.ent_coef,
            ref_log_prob=ref_log_prob,
            entropy=entropy_or_estimate(entropy, lambda: self._fresh_sample_log_prob(part.observations)),
            in_loss=layout.to_steps(loss_mask)[:, 0],
            episode_index=layout.episode_index[:, 0],
        )
        stats: dict[str, float] = {}
        with th.no_grad():
            stats["policy_gradient_loss"] = aggregate(terms.policy).item()
            stats["entropy_loss"] = -aggregate(terms.entropy).item()  # type: ignore[arg-type]
            stats["kl_ref"] = aggregate(terms.kl).item()  # type: ignore[arg-type]
            stats["clip_fraction"] = terms.clipped.float().mean().item()
            stats["approx_kl"] = terms.approx_kl.mean().item()  # type: ignore[union-attr]
            if terms.entropy_mask_fraction is not None:
                stats["entropy_mask_fraction"] = terms.entropy_mask_fraction.item()
        return aggregate(terms.total()), stats

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
        if batch is not None and self.uses_groups and (self.dynamic_sampling or self.keep_return_bounds is not None):
            batch = self._informative_episodes(batch)
            detail = f"{self.signal_monitor.patience} updates in a row"
            self.signal_monitor.observe("all_filtered", batch is None, detail=detail)
        if batch is not None and self.mask_truncated_completions:
            all_truncated = int(batch.truncated.sum()) == int(batch.lengths.numel())  # one flag per truncated episode
            self.signal_monitor.observe("all_truncated_masked", all_truncated, immediate=True)
            batch = None if all_truncated else batch
        if batch is None:
            self.logger.record("train/skipped_updates", 1)
            return
        advantages = self._advantages(batch).advantages  # every episode counts in the group statistics
        standardise = not self.uses_groups if self.normalize_advantage is None else self.normalize_advantage
        if standardise:  # over the batch, as PPO's normalize_advantage (the default for Monte-Carlo returns)
            advantages = standardize(advantages)
        self._warn_if_no_signal(advantages, batch)
        max_length = int(batch.lengths.max())
        done = batch.terminated | batch.truncated

        records: dict[str, list[float]] = {}
        loss = th.zeros(())
        continue_training = True
        for epoch in range(self.n_epochs):
            records["approx_kl"] = []
            for steps in episode_minibatches(batch.lengths.cpu(), self.batch_size):
                steps = steps.to(self.device)
                layout = EpisodeLayout.from_dones(done[steps])
                loss, stats = self._minibatch_loss(
                    batch.take(steps), advantages[steps], layout, clip_range, clip_range_high, max_length
                )
                for key, value in stats.items():
                    records.setdefault(key, []).append(value)
                approx_kl = stats["approx_kl"]
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

        self._record_train_stats(records, loss)

    def _record_train_stats(self, records: dict[str, list[float]], loss: th.Tensor) -> None:
        """SB3's ``train/*`` keys (means over the mini-batches; ``approx_kl`` over the last epoch)."""
        for key in ("entropy_loss", "policy_gradient_loss", "kl_ref", "approx_kl", "clip_fraction", "entropy_mask_fraction"):
            if key in records or key == "approx_kl":
                values = records.get(key, [])
                self.logger.record(f"train/{key}", float(np.mean(values)) if values else 0.0)
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
