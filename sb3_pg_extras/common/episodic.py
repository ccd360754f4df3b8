"""Base class of the Monte-Carlo (episodic) SB3 algorithms: collection into :class:`EpisodicRolloutBuffer`.

:class:`EpisodicOnPolicyAlgorithm` is SB3's ``OnPolicyAlgorithm`` (same ``learn`` loop, callbacks, logger, save/load)
with what a Monte-Carlo method needs changed:

* ``collect_rollouts`` records ``terminated`` and ``truncated`` separately (no SB3 reward hack for time limits) and
  fills an :class:`~sb3_pg_extras.common.buffers.EpisodicRolloutBuffer`, which keeps unfinished episodes for the
  next rollout and trains on complete episodes only;
* one score-function step ``-mean(log pi(a_t|s_t) * w_t) - ent_coef * mean(H)`` with weights ``w_t`` (``G_t`` for
  REINFORCE, ``G_t - V(s_t)`` with a baseline; seed 2.1 / 2.3), computed over the whole batch (``batch_size`` only
  chunks the computation: gradients are accumulated, the step is the full-batch one).

``n_steps`` keeps SB3's meaning (steps per env per rollout, one update per rollout), so ``learn(total_timesteps)``,
callbacks and the progress bar behave as for A2C / PPO.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_pg_extras.common.buffers import EpisodicRolloutBuffer, EpisodicRolloutBufferSamples

__all__ = ["SUPPORTED_ACTION_SPACES", "EpisodicOnPolicyAlgorithm"]

SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
SelfEpisodic = TypeVar("SelfEpisodic", bound="EpisodicOnPolicyAlgorithm")


def check_positive_int(name: str, value: Any, hint: str = "") -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}{': ' + hint if hint else '.'}")


def check_nonnegative(name: str, value: Any, hint: str = "") -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (0 <= value < float("inf")):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}{': ' + hint if hint else '.'}")


def check_rate(name: str, value: float | Schedule) -> None:
    """A learning rate is a float >= 0 or a schedule ``progress_remaining -> float``."""
    if callable(value):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
        raise ValueError(f"{name} must be >= 0 or a schedule (callable of the remaining progress), got {value!r}.")


class EpisodicOnPolicyAlgorithm(OnPolicyAlgorithm):
    """``OnPolicyAlgorithm`` that trains on complete episodes (see the module docstring).

    :param carry_over: keep the unfinished episode of each env for the next rollout (default). ``False``: drop it,
        so that every update uses only steps collected by the current policy (strictly on-policy, fewer steps).
    :param max_carry_steps: raise when an episode has run this many steps without ending (default
        ``max(10 * n_steps, 10_000)``): wrap such an env in a ``TimeLimit``.
    :param batch_size: steps per forward/backward chunk in ``train`` (``None``: all at once). It changes memory use,
        not the update.
    Other parameters: as SB3's ``OnPolicyAlgorithm``.
    """

    rollout_buffer: EpisodicRolloutBuffer
    policy: ActorCriticPolicy
    #: whether ``collect_rollouts`` stores ``V(s_final)`` of truncated episodes (set by algorithms with a critic)
    bootstrap_truncated: bool = False
    #: the action spaces the algorithm supports
    supported_spaces: ClassVar[tuple[type[spaces.Space], ...]] = SUPPORTED_ACTION_SPACES

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule,
        n_steps: int,
        gamma: float,
        ent_coef: float,
        max_grad_norm: float | None,
        batch_size: int | None = None,
        carry_over: bool = True,
        max_carry_steps: int | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        monitor_wrapper: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        check_rate("learning_rate", learning_rate)
        check_positive_int(
            "n_steps", n_steps, "it is the number of steps per env per rollout; use at least one typical episode length."
        )
        if not (isinstance(gamma, (int, float, np.number)) and 0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}.")
        check_nonnegative("ent_coef", ent_coef, "the entropy bonus weight cannot be negative; use 0 to disable it.")
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float, np.number)) and max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be > 0 (or None for no clipping), got {max_grad_norm!r}.")
        if batch_size is not None:
            check_positive_int("batch_size", batch_size, "pass None to use the whole rollout at once.")
        if max_carry_steps is not None:
            check_positive_int("max_carry_steps", max_carry_steps, "pass None for the default max(10 * n_steps, 10_000).")
        if not isinstance(carry_over, (bool, np.bool_)):
            raise ValueError(f"carry_over must be True or False, got {carry_over!r}.")
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
            monitor_wrapper=monitor_wrapper,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
            supported_action_spaces=None,  # checked below with a ValueError that says what to do
        )
        if self.env is not None and not isinstance(self.action_space, self.supported_spaces):
            names = ", ".join(s.__name__ for s in self.supported_spaces)
            raise ValueError(
                f"{type(self).__name__} does not support the action space {self.action_space} of env: use an env with a "
                f"{names} action space (e.g. flatten a Tuple/Dict action space with a wrapper)."
            )
        self.batch_size = batch_size
        self.carry_over = bool(carry_over)
        self.max_carry_steps = max_carry_steps
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        max_carry = self.max_carry_steps if self.max_carry_steps is not None else max(10 * self.n_steps, 10_000)
        self.rollout_buffer = EpisodicRolloutBuffer(
            self.n_steps,
            self.observation_space,
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            n_envs=self.n_envs,
            carry_over=self.carry_over,
            max_carry_steps=max_carry,
        )
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._maybe_recommend_cpu(self.policy_aliases["MlpPolicy"].__name__)

    # ------------------------------------------------------------------ collection
    def _terminal_values(self, infos: list[dict[str, Any]], truncated: np.ndarray) -> np.ndarray | None:
        """``V(s_final)`` where an episode was truncated (only when ``bootstrap_truncated``)."""
        if not self.bootstrap_truncated or not truncated.any():
            return None
        values = np.zeros(len(infos), dtype=np.float32)
        for idx in np.flatnonzero(truncated):
            final_obs = infos[idx].get("terminal_observation")
            if final_obs is None:
                continue
            obs_tensor = self.policy.obs_to_tensor(final_obs)[0]
            with th.no_grad():
                values[idx] = float(self.policy.predict_values(obs_tensor)[0])  # type: ignore[arg-type]
        return values

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: EpisodicRolloutBuffer,  # type: ignore[override]
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` steps per env into ``rollout_buffer`` (unfinished episodes are carried over).

        :return: False if a callback stopped training.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)
        rollout_buffer.reset(self._last_episode_starts)
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()

        n_steps = 0
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                distribution = self.policy.get_distribution(obs_tensor)
                actions_t = distribution.get_actions()
                log_probs = distribution.log_prob(actions_t)
            actions = actions_t.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[misc]
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                # The env has moved on without this step being stored: the unfinished episodes cannot be completed.
                rollout_buffer.drop_tails()
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            ended = np.asarray(dones, dtype=bool)
            truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & ended
            terminated = ended & ~truncated
            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                terminated,
                truncated,
                log_probs,
                self._terminal_values(infos, truncated),
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        rollout_buffer.compute_returns(bootstrap_truncated=self.bootstrap_truncated)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    # ------------------------------------------------------------------ training helpers
    def _rollout_batch(self) -> EpisodicRolloutBufferSamples | None:
        """All usable steps of the rollout as one batch, or ``None`` (with a warning) if no episode is complete."""
        buf = self.rollout_buffer
        self.logger.record("train/n_episodes", buf.n_episodes)
        self.logger.record("train/n_steps_used", buf.n_usable)
        self.logger.record("train/carried_steps", buf.carried_steps)
        if buf.n_usable == 0:
            hint = (
                "the unfinished episodes are carried over to the next rollout"
                if self.carry_over
                else "with carry_over=False the unfinished episodes are dropped, so nothing can be learnt"
            )
            warnings.warn(
                f"{type(self).__name__}: no episode both started and ended in this rollout (n_steps={self.n_steps} per "
                f"env), the update is skipped ({hint}). Increase n_steps to at least one episode length or wrap the env "
                "in a time limit.",
                RuntimeWarning,
            )
            return None
        return next(buf.get(batch_size=None))

    def _chunks(self, n: int) -> list[slice]:
        size = n if self.batch_size is None else self.batch_size
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    @staticmethod
    def _take(samples: EpisodicRolloutBufferSamples, index: slice | th.Tensor) -> EpisodicRolloutBufferSamples:
        """Rows ``index`` of every field of ``samples``."""
        obs = samples.observations
        obs = {k: v[index] for k, v in obs.items()} if isinstance(obs, dict) else obs[index]
        return EpisodicRolloutBufferSamples(
            obs,
            samples.actions[index],
            samples.old_log_prob[index],
            samples.returns[index],
            samples.episode_starts[index],
        )

    def _policy_actions(self, actions: th.Tensor) -> th.Tensor:
        return actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else actions

    def _policy_gradient_step(
        self,
        batch: EpisodicRolloutBufferSamples,
        weights: th.Tensor,
        parameters: Callable[[], Any] | None = None,
    ) -> None:
        """One step on ``-mean(log pi(a|s) * weights) - ent_coef * mean(entropy)`` over the batch (seed 2.1 / 2.3).

        Gradients of the ``batch_size`` chunks are accumulated, so the step equals the full-batch one. Logs
        ``train/policy_gradient_loss``, ``train/entropy_loss``, ``train/approx_kl`` (collection-time vs current policy,
        > 0 only for carried steps) and ``train/std`` (Gaussian policies).
        """
        weights = weights.detach().to(self.device)
        n = int(weights.numel())
        optimizer = self.policy.optimizer
        optimizer.zero_grad()
        pg_total, ent_total, kl_total = 0.0, 0.0, 0.0
        for chunk in self._chunks(n):
            part = self._take(batch, chunk)
            distribution = self.policy.get_distribution(part.observations)
            log_prob = distribution.log_prob(self._policy_actions(part.actions))
            entropy = distribution.entropy()
            # Entropy with no closed form (e.g. squashed Gaussian): one-sample estimate -log pi, as SB3's A2C.
            entropy_term = -log_prob if entropy is None else entropy
            pg_sum = -(log_prob * weights[chunk]).sum()
            ent_sum = -entropy_term.sum()
            ((pg_sum + self.ent_coef * ent_sum) / n).backward()
            pg_total += pg_sum.item()
            ent_total += ent_sum.item()
            with th.no_grad():
                log_ratio = log_prob - part.old_log_prob
                kl_total += ((th.exp(log_ratio) - 1) - log_ratio).sum().item()
        params = list(parameters() if parameters is not None else self.policy.parameters())
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        optimizer.step()
        self.logger.record("train/policy_gradient_loss", pg_total / n)
        self.logger.record("train/entropy_loss", ent_total / n)
        self.logger.record("train/approx_kl", kl_total / n)
        if getattr(self.policy, "log_std", None) is not None:
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    def learn(
        self: SelfEpisodic,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfEpisodic:
        """SB3's ``learn`` (one update per rollout of ``n_steps * n_envs`` steps); ``tb_log_name``: the class name."""
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name or type(self).__name__,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
