"""Group Relative Policy Optimization (GRPO) as a Stable-Baselines3 on-policy algorithm.

Seed section 2.6 and DESIGN.md "GRPO"; DeepSeekMath (Shao et al. 2024, arXiv:2402.03300) for the objective,
DAPO (Yu et al. 2025, arXiv:2503.14476) for ``clip_range_high`` and token-level aggregation, Dr. GRPO
(Liu et al. 2025, arXiv:2503.20783) for ``advantage_scale="none"`` and ``loss_aggregation="dr_grpo"``,
RLOO (Ahmadian et al. 2024, arXiv:2402.14740) for the leave-one-out baseline.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from pg_extras import ADVANTAGE_MODES, ADVANTAGE_SCALES, LOSS_AGGREGATIONS, aggregate_loss, clipped_surrogate_loss, kl_estimate
from sb3_pg_extras.common.group_env import GroupSync, check_group_size
from sb3_pg_extras.common.policies import ActorOnlyCnnPolicy, ActorOnlyMultiInputPolicy, ActorOnlyPolicy
from sb3_pg_extras.grpo.buffers import GroupRolloutBuffer, GroupRolloutStats

__all__ = ["GRPO"]

SelfGRPO = TypeVar("SelfGRPO", bound="GRPO")

_SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name}={value!r}: use one of {', '.join(repr(c) for c in choices)}.")


def _check_clip(name: str, value: float | Schedule | None, allow_none: bool) -> None:
    if value is None:
        if not allow_none:
            raise ValueError(f"{name} must be a positive float or a schedule, got None.")
        return
    if callable(value):
        for progress in (1.0, 0.0):
            if not float(value(progress)) >= 0:
                raise ValueError(f"{name} schedule must return values >= 0, got {value(progress)} at progress {progress}.")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive float (e.g. 0.2) or a schedule, got {value!r}.")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{none}, got {value!r}.")


class GRPO(OnPolicyAlgorithm):
    """Group Relative Policy Optimization (seed 2.6): critic-free PPO-clip on group-relative advantages.

    The ``n_envs`` envs form ``n_envs / group_size`` groups (columns ``[kG, (k+1)G)``). The envs run in *rounds*
    (:class:`~sb3_pg_extras.common.group_env.GroupSync`): a round resets every env, with one seed per group so
    that the ``G`` members of a group start from the same state; each env plays one episode, then waits (its
    steps are masked out: not trained on, not logged) until every env has finished; then the next round starts.
    Each group's ``G`` complete episodes give group-relative advantages (:func:`pg_extras.group_relative_advantages`);
    the policy maximises the clipped surrogate minus ``beta * KL(pi || pi_ref)`` (k3 estimator), aggregated over the
    variable-length episodes by ``loss_aggregation``.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an ``ActorOnlyPolicy`` subclass (no critic).
    :param env: the environment (a ``VecEnv`` with ``n_envs`` a multiple of ``group_size``, or an env id: then a
        ``VecEnv`` of ``n_envs`` copies is made).
    :param learning_rate: learning rate, a float or a schedule of the progress remaining (1 -> 0).
    :param n_steps: minimum number of steps per env in a rollout: collection goes on until the first round end after
        ``n_steps`` steps, so a rollout always holds whole rounds (complete groups of complete episodes).
        ``n_steps=1``: one round (one episode per env) per update.
    :param batch_size: about how many steps a mini-batch holds; mini-batches are made of whole, shuffled episodes
        (a mini-batch takes episodes until it holds ``batch_size`` steps), so that ``loss_aggregation`` is exact
        per mini-batch. ``None``: the whole rollout in one mini-batch.
    :param n_epochs: passes over the rollout per update.
    :param gamma: discount of the returns used by the advantages (``outcome``: the episode return; ``return_to_go``:
        the returns-to-go). GRPO's default is the undiscounted return (1.0).
    :param group_size: ``G``, episodes per group (>= 2); must divide the number of envs.
    :param n_envs: number of envs to make when ``env`` is an id (default: ``group_size``); with a ``VecEnv`` it must
        be ``None`` or equal to its number of envs.
    :param advantage_mode: ``"outcome"`` (episode return, normalised in the group, given to every step),
        ``"process"`` (per-step rewards normalised in the group, summed from t on; no signal with constant rewards)
        or ``"return_to_go"`` (returns-to-go normalised over the members still running at t). See DESIGN.md.
    :param advantage_scale: ``"group"`` (divide by the group's std, GRPO), ``"batch"`` (by the rollout's std) or
        ``"none"`` (Dr. GRPO).
    :param rloo: leave-one-out baseline ``r_i - mean_{j != i} r_j`` instead of the group mean.
    :param clip_range: PPO clipping ``eps`` (``eps_low`` with ``clip_range_high``), a float > 0 or a schedule.
    :param clip_range_high: DAPO clip-higher ``eps_high`` (float or schedule); ``None``: same as ``clip_range``.
    :param beta: weight of ``KL(pi || pi_ref)`` (k3 estimator) in the loss, >= 0 (0: no KL penalty).
    :param ref_update_interval: copy the policy into the reference policy every this many gradient steps
        (``None``: the reference stays the initial policy).
    :param loss_aggregation: ``"grpo"`` (mean over each episode's steps, then over episodes), ``"bnpo"``/``"dapo"``
        (mean over all steps of the mini-batch) or ``"dr_grpo"`` (sum over steps / (episodes * longest episode of
        the rollout)).
    :param ent_coef: entropy bonus coefficient.
    :param max_grad_norm: gradient clipping (``None``: no clipping).
    :param target_kl: stop the epochs of an update early when the approximate ``KL(pi_old || pi)`` of a mini-batch
        exceeds ``1.5 * target_kl`` (as SB3's PPO). ``None``: no limit.
    :param use_sde: generalized State Dependent Exploration (Box actions only).
    :param sde_sample_freq: sample a new gSDE noise matrix every n steps (-1: once per rollout).
    :param stats_window_size: episodes averaged by the rollout logs.
    :param tensorboard_log: tensorboard log folder (None: no tensorboard).
    :param policy_kwargs: keyword arguments of the policy (``net_arch``, ``activation_fn``, ...).
    :param verbose: 0 silent, 1 info, 2 debug.
    :param seed: seed of the random generators (torch, numpy, the envs' group reset seeds).
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :param _init_setup_model: build the networks at construction.

    Example::

        >>> from sb3_pg_extras import GRPO
        >>> model = GRPO("MlpPolicy", "CartPole-v1", group_size=8, seed=0)
        >>> model.learn(2_000)  # doctest: +ELLIPSIS
        <sb3_pg_extras.grpo.algo.GRPO object at ...>
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorOnlyPolicy,
        "CnnPolicy": ActorOnlyCnnPolicy,
        "MultiInputPolicy": ActorOnlyMultiInputPolicy,
    }
    policy: ActorOnlyPolicy
    ref_policy: ActorOnlyPolicy
    rollout_buffer: GroupRolloutBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[ActorOnlyPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 256,
        batch_size: int | None = 512,
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
            if policy not in self.policy_aliases:
                raise ValueError(f"Unknown policy={policy!r}: use one of {', '.join(map(repr, self.policy_aliases))}.")
        elif not (isinstance(policy, type) and issubclass(policy, ActorOnlyPolicy)):
            raise ValueError(
                f"policy={policy!r}: GRPO is critic-free, pass 'MlpPolicy', 'CnnPolicy', 'MultiInputPolicy' or a "
                "subclass of sb3_pg_extras.common.policies.ActorOnlyPolicy."
            )
        _check_int("group_size", group_size, 2)
        _check_int("n_envs", n_envs, 1, allow_none=True)
        _check_int("n_steps", n_steps, 1)
        _check_int("n_epochs", n_epochs, 1)
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("ref_update_interval", ref_update_interval, 1, allow_none=True)
        _check_choice("advantage_mode", advantage_mode, ADVANTAGE_MODES)
        _check_choice("advantage_scale", advantage_scale, ADVANTAGE_SCALES)
        _check_choice("loss_aggregation", loss_aggregation, LOSS_AGGREGATIONS)
        _check_clip("clip_range", clip_range, allow_none=False)
        _check_clip("clip_range_high", clip_range_high, allow_none=True)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0 (the weight of the KL penalty; 0 disables it), got {beta}.")
        if target_kl is not None and not target_kl > 0:
            raise ValueError(f"target_kl must be > 0 or None (no early stopping), got {target_kl}.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None (no gradient clipping), got {max_grad_norm}.")
        if not isinstance(rloo, (bool, np.bool_)):
            raise ValueError(f"rloo must be True or False, got {rloo!r}.")

        if isinstance(env, str):
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
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=0.0,
            max_grad_norm=max_grad_norm,  # type: ignore[arg-type]
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=None,
        )
        if self.env is not None and not isinstance(self.action_space, _SUPPORTED_ACTION_SPACES):
            raise ValueError(
                f"GRPO does not support the action space {self.action_space}: use an env with a Box, Discrete, "
                "MultiDiscrete or MultiBinary action space."
            )
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.group_size = group_size
        self.advantage_mode = advantage_mode
        self.advantage_scale = advantage_scale
        self.rloo = bool(rloo)
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
        if self.env is not None:
            check_group_size(self.group_size, self.env.num_envs)
        self._group_sync = GroupSync(self.n_envs, self.group_size, seed=self.seed)
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.rollout_buffer = GroupRolloutBuffer(
            self.observation_space, self.action_space, self.n_envs, self.group_size, device=self.device
        )
        self.policy = self._make_policy()
        self.ref_policy = self._make_policy()
        self.ref_policy.set_training_mode(False)
        self.ref_policy.requires_grad_(False)
        self._sync_ref_policy()
        self._maybe_recommend_cpu("ActorOnlyPolicy")
        self.clip_range = FloatSchedule(self.clip_range)  # type: ignore[arg-type]
        if self.clip_range_high is not None:
            self.clip_range_high = FloatSchedule(self.clip_range_high)  # type: ignore[arg-type]

    def _make_policy(self) -> ActorOnlyPolicy:
        policy = self.policy_class(  # type: ignore[call-arg]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        return policy.to(self.device)  # type: ignore[return-value]

    def _sync_ref_policy(self) -> None:
        """Copy the current policy into the frozen reference policy ``pi_ref``."""
        self.ref_policy.load_state_dict(self.policy.state_dict())

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed python, numpy, torch, the action space, the env and the generator of the groups' reset seeds."""
        super().set_random_seed(seed)
        if seed is not None and getattr(self, "_group_sync", None) is not None:
            self._group_sync.seed(seed)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Set a new env (same number of envs); the next rollout starts a new round of group resets."""
        super().set_env(env, force_reset=force_reset)
        check_group_size(self.group_size, self.n_envs)
        self._group_sync.needs_reset = True

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        # The env reset done by SB3 here must already be a group reset (one seed per group).
        will_reset = reset_num_timesteps or self._last_obs is None
        if will_reset and self.env is not None:
            self._group_sync.prepare_reset(self.env)
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if will_reset:
            self._group_sync.mark_reset()
        return result

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # A rollout ends at a round end, so it can overshoot total_timesteps: keep schedules in their [0, 1] domain
        # (RL Zoo's lin_<x> would otherwise give a negative clip range / learning rate).
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        self._current_progress_remaining = min(max(self._current_progress_remaining, 0.0), 1.0)

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer", "ref_policy"], []

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_group_sync", "_last_rollout_stats"]

    # ---------------------------------------------------------------- rollout
    def collect_rollouts(  # type: ignore[override]
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: GroupRolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect whole rounds (at least ``n_rollout_steps`` steps per env) and compute the group advantages.

        :return: False if a callback stopped the training.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        sync = self._group_sync
        self.policy.set_training_mode(False)
        if sync.needs_reset:
            # New env, or the previous rollout was interrupted: start a fresh round.
            self._last_obs = sync.reset(env)  # type: ignore[assignment]
            self._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()
        while True:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)

            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, _, log_probs = self.policy(obs_tensor)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            step = sync.filter_step(rewards, dones, infos)
            rewards, dones, infos = step.rewards, step.dones, step.infos

            callback.update_locals(locals())
            if not callback.on_step():
                sync.needs_reset = True  # the round in flight is lost: the next rollout starts a new one
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1
            rollout_buffer.add(self._last_obs, actions, rewards, step.active, dones, log_probs, step.round_end)  # type: ignore[arg-type]
            if step.round_end:
                new_obs = sync.reset(env)
                dones = np.ones_like(dones)
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            if step.round_end and n_steps >= n_rollout_steps:
                break

        stats = rollout_buffer.compute_advantages(
            mode=self.advantage_mode, scale=self.advantage_scale, rloo=self.rloo, gamma=self.gamma
        )
        self._record_rollout_stats(stats)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _record_rollout_stats(self, stats: GroupRolloutStats) -> None:
        self._last_rollout_stats = stats
        self.logger.record("rollout/group_return_std", stats.group_return_std)
        self.logger.record("rollout/frac_zero_std_groups", stats.frac_zero_std_groups)
        self.logger.record("rollout/group_episodes", stats.n_episodes)
        self.logger.record("rollout/active_step_fraction", stats.active_fraction)
        # Returns differ but every advantage is zero: the per-step rewards are constant (DESIGN.md "process").
        signal_lost = stats.all_advantages_zero and stats.group_return_std > 0
        if self.advantage_mode == "process" and signal_lost and not self._warned_zero_signal:
            self._warned_zero_signal = True
            warnings.warn(
                "advantage_mode='process' gave zero advantages although episode returns differ: the per-step rewards "
                "are constant (e.g. CartPole), so process supervision has no signal. Use advantage_mode='outcome' or "
                "'return_to_go'.",
                stacklevel=2,
            )

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """Update the policy on the rollout: ``n_epochs`` passes of mini-batches of whole episodes."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_high = None
        if self.clip_range_high is not None:
            clip_range_high = self.clip_range_high(self._current_progress_remaining)  # type: ignore[operator]
        buffer = self.rollout_buffer
        max_length = buffer.max_length

        def aggregate(per_step: th.Tensor, batch: Any) -> th.Tensor:
            return aggregate_loss(batch.to_episodes(per_step), batch.mask, self.loss_aggregation, max_length=max_length)

        pg_losses, entropy_losses, kl_refs, clip_fractions, losses = [], [], [], [], []
        approx_kl_divs: list[float] = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for batch in buffer.get(self.batch_size):
                actions = batch.actions
                _, log_prob, entropy = self.policy.evaluate_actions(batch.observations, actions)
                surrogate, clipped = clipped_surrogate_loss(
                    log_prob, batch.old_log_prob, batch.advantages, clip_range, clip_range_high
                )
                with th.no_grad():
                    _, ref_log_prob, _ = self.ref_policy.evaluate_actions(batch.observations, actions)
                kl_ref = kl_estimate(log_prob, ref_log_prob, "k3")  # KL(pi || pi_ref), DESIGN k3
                if entropy is None:
                    entropy = -log_prob  # no closed form: single-sample estimate, as SB3's PPO
                per_step = surrogate + self.beta * kl_ref - self.ent_coef * entropy
                loss = aggregate(per_step, batch)

                with th.no_grad():
                    pg_losses.append(aggregate(surrogate, batch).item())
                    entropy_losses.append(-aggregate(entropy, batch).item())
                    kl_refs.append(aggregate(kl_ref, batch).item())
                    clip_fractions.append(clipped.float().mean().item())
                    # k3 estimate of KL(pi_old || pi) with samples of pi_old (SB3's approx_kl)
                    approx_kl = kl_estimate(batch.old_log_prob, log_prob.detach(), "k3").mean().item()
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
                losses.append(loss.item())
                self._n_grad_steps += 1
                if self.ref_update_interval is not None and self._n_grad_steps % self.ref_update_interval == 0:
                    self._sync_ref_policy()

            self._n_updates += 1
            if not continue_training:
                break

        self.logger.record("train/entropy_loss", float(np.mean(entropy_losses)))
        self.logger.record("train/policy_gradient_loss", float(np.mean(pg_losses)))
        self.logger.record("train/kl_ref", float(np.mean(kl_refs)))
        self.logger.record("train/approx_kl", float(np.mean(approx_kl_divs)) if approx_kl_divs else 0.0)
        self.logger.record("train/clip_fraction", float(np.mean(clip_fractions)))
        if losses:
            self.logger.record("train/loss", losses[-1])
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        stats = getattr(self, "_last_rollout_stats", None)
        if stats is not None:
            self.logger.record("train/frac_zero_std_groups", stats.frac_zero_std_groups)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/n_gradient_steps", self._n_grad_steps, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_high is not None:
            self.logger.record("train/clip_range_high", clip_range_high)

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
