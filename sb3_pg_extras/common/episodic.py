"""The base of the SB3 algorithms: one collection loop, for whole episodes (optionally in groups) and for SB3's steps.

:class:`EpisodicOnPolicyAlgorithm` is SB3's ``OnPolicyAlgorithm`` (same ``learn`` loop, callbacks, logger, progress
bar, save/load) with one ``collect_rollouts`` override, for every estimator; the estimators that need whole episodes
(docs/design.md "The episode and group engine"):

* the steps go into an :class:`~sb3_pg_extras.common.buffers.EpisodeBuffer` with the id of their episode; episodes
  still running at the end of a rollout are kept for the next one (``carry_over``), never given a made-up return;
* with ``advantage_estimator="group"`` the episodes are group members handed out by :class:`pg_extras.GroupScheduler`
  (:class:`~sb3_pg_extras.common.group_env.SlotEpisodes`): any number of envs, any group size, no env waits for
  another; a group is trained on once its ``group_size`` members have ended;
* ``terminated`` and ``truncated`` are recorded separately; critic algorithms store ``V(s_final)`` at truncations;
* ``advantage_mode="remax"``: each group gets one extra, greedy member (the deterministic action, from the group's
  seed; not stored, not trained on) whose return is the group's baseline (docs/maths.md#remax).

With ``advantage_estimator="gae"`` (TRPO's default) the same loop fills SB3's ``RolloutBuffer`` as SB3's own
``collect_rollouts`` would (callbacks, info buffers, the time-limit bootstrap, ``compute_returns_and_advantage``), with
the actions sampled without the value head and the rollout's values computed in one batch at its end. ``n_steps``
keeps SB3's meaning (steps per env per rollout, one update per rollout).
The advantages of every estimator come from :func:`pg_extras.estimate_advantages`, the losses from
:mod:`pg_extras.objectives`.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Sequence
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

from pg_extras import (
    ADVANTAGE_ESTIMATORS,
    ADVANTAGE_MODES,
    ADVANTAGE_SCALES,
    AdvantageEstimate,
    GroupScheduler,
    ObjectiveOptions,
    entropy_or_estimate,
    estimate_advantages,
    policy_objective,
)
from pg_extras.signal import SignalMonitor
from pg_extras.validation import check_bool, check_choice, check_finite, check_float, check_int, check_rate_or_schedule
from sb3_pg_extras.common.buffers import EpisodeBatch, EpisodeBuffer
from sb3_pg_extras.common.group_env import SlotEpisodes
from sb3_pg_extras.common.policies import OBSERVATIONS_HINT

__all__ = ["SUPPORTED_ACTION_SPACES", "EpisodicOnPolicyAlgorithm"]


def _saved_algorithm(path: str | pathlib.Path | io.BufferedIOBase) -> str | None:
    """The pg-extras algorithm that saved ``path`` (``None``: unknown); a missing file raises ``FileNotFoundError``."""
    if isinstance(path, io.BufferedIOBase):
        return None
    file = pathlib.Path(path)
    if not file.exists() and file.suffix != ".zip" and pathlib.Path(f"{file}.zip").exists():
        file = pathlib.Path(f"{file}.zip")
    if not file.exists():
        raise FileNotFoundError(f"No saved model at {path}: check the path (a '.zip' suffix is added when missing).")
    try:
        with zipfile.ZipFile(file) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ValueError(f"{path} is not a model saved by Stable-Baselines3 ({error}).") from error
    name = data.get("pg_extras_algorithm")
    return name if isinstance(name, str) else None


SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def _check_action_space(owner: str, space: spaces.Space) -> None:
    """Refuse, with the fix, the action spaces SB3's policies would mishandle silently or with an assertion."""
    if isinstance(space, spaces.Discrete) and int(space.start) != 0:
        raise ValueError(
            f"{owner}: the action space {space} starts at {int(space.start)}, but SB3's policies output actions 0..n-1, "
            f"so every action would be off by {int(space.start)}: use Discrete({int(space.n)}) and add the offset in "
            "the env (or a gymnasium ActionWrapper)."
        )
    if isinstance(space, spaces.MultiDiscrete) and np.any(np.asarray(space.start) != 0):
        raise ValueError(
            f"{owner}: the action space {space} has non-zero starts, but SB3's policies output actions from 0: shift them "
            "in the env (or a gymnasium ActionWrapper)."
        )
    if isinstance(space, spaces.MultiBinary) and len(np.atleast_1d(space.shape)) != 1:
        raise ValueError(
            f"{owner}: the action space {space} has shape {space.shape}; SB3's policies take a one-dimensional "
            f"MultiBinary: use MultiBinary({int(np.prod(space.shape))}) and reshape the action in the env."
        )
    if isinstance(space, spaces.Box) and not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise ValueError(
            f"{owner}: the action space {space} has infinite bounds, so actions cannot be clipped to it (SB3 clips every "
            "sampled action to the bounds): give the Box finite low / high (e.g. Box(-1, 1)) and rescale in the env."
        )


GROUP_SCHEDULES = ("async", "lockstep")
SelfEpisodic = TypeVar("SelfEpisodic", bound="EpisodicOnPolicyAlgorithm")


class EpisodicOnPolicyAlgorithm(OnPolicyAlgorithm):
    """``OnPolicyAlgorithm`` that trains on whole episodes (see the module docstring).

    :param advantage_estimator: one of ``estimators`` (the subclass says which it accepts).
    :param group_size: episodes per group (``advantage_estimator="group"``), >= 2.
    :param advantage_mode: group advantages: ``"outcome"``, ``"process"`` or ``"return_to_go"``.
    :param advantage_scale: group advantages: ``"group"``, ``"batch"`` or ``"none"``.
    :param rloo: group advantages: leave-one-out baseline.
    :param group_schedule: ``"async"`` (a finished env starts the next member at once) or ``"lockstep"`` (rounds).
    :param max_policy_lag: groups whose members span more than this many policy updates are dropped (counted in
        ``rollout/groups_dropped_stale``); ``None``: no bound.
    :param carry_over: keep running episodes for the next rollout (``False``: drop them; strictly on-policy). Groups
        always carry over.
    :param max_episode_steps: raise when an episode has run this many steps without ending (default
        ``max(10 * n_steps, 10_000)``): wrap such an env in a ``TimeLimit``.
    :param batch_size: steps per chunk / mini-batch (``None``: all at once).
    Other parameters: as SB3's ``OnPolicyAlgorithm``.
    """

    policy: ActorCriticPolicy
    #: whether ``collect_rollouts`` stores ``V(s_final)`` of truncated episodes (algorithms with a critic)
    bootstrap_truncated: bool = False
    #: the advantage estimators the algorithm accepts
    estimators: ClassVar[tuple[str, ...]] = ("mc", "group")
    #: the action spaces the algorithm supports
    supported_spaces: ClassVar[tuple[type[spaces.Space], ...]] = SUPPORTED_ACTION_SPACES
    #: the options of :func:`pg_extras.policy_objective` (REINFORCE's ``"pg"`` rule; GRPO holds its own per instance)
    objective_options: ObjectiveOptions = ObjectiveOptions("pg")

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
        advantage_estimator: str = "mc",
        group_size: int | None = None,
        advantage_mode: str = "outcome",
        advantage_scale: str = "group",
        rloo: bool = False,
        group_schedule: str = "async",
        max_policy_lag: int | None = None,
        carry_over: bool = True,
        max_episode_steps: int | None = None,
        gae_lambda: float = 1.0,
        vf_coef: float = 0.0,
        rollout_buffer_class: Any = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
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
        check_rate_or_schedule("learning_rate", learning_rate)
        check_int("n_steps", n_steps, 1, hint="the number of steps per env per rollout")
        check_float("gamma", gamma, 0.0, 1.0)
        check_float("gae_lambda", gae_lambda, 0.0, 1.0)
        check_float("ent_coef", ent_coef, 0.0, hint="the entropy bonus weight; 0 disables it")
        check_float("max_grad_norm", max_grad_norm, 0.0, low_inclusive=False, allow_none=True, hint="None: no clipping")
        check_int("batch_size", batch_size, 1, allow_none=True, hint="None: the whole rollout at once")
        check_choice("advantage_estimator", advantage_estimator, self.estimators)
        check_choice("advantage_mode", advantage_mode, ADVANTAGE_MODES)
        check_choice("advantage_scale", advantage_scale, ADVANTAGE_SCALES)
        check_bool("rloo", rloo)
        check_choice("group_schedule", group_schedule, GROUP_SCHEDULES)
        check_int("max_policy_lag", max_policy_lag, 0, allow_none=True, hint="None: no bound")
        check_bool("carry_over", carry_over)
        check_int("max_episode_steps", max_episode_steps, 1, allow_none=True)
        if advantage_estimator == "group":
            check_int("group_size", group_size, 2, hint="a group compares two episodes or more")
        elif group_size is not None:
            check_int("group_size", group_size, 2)
        assert advantage_estimator in ADVANTAGE_ESTIMATORS
        if isinstance(getattr(env, "action_space", None), spaces.Space):  # before SB3's own assertions on it
            _check_action_space(type(self).__name__, env.action_space)  # type: ignore[union-attr]
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,  # type: ignore[arg-type]
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
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
        if self.env is not None:
            _check_action_space(type(self).__name__, self.action_space)
        self.batch_size = batch_size
        self.advantage_estimator = advantage_estimator
        self.group_size = group_size
        self.advantage_mode = advantage_mode
        self.advantage_scale = advantage_scale
        self.rloo = bool(rloo)
        self.group_schedule = group_schedule
        self.max_policy_lag = max_policy_lag
        self.carry_over = bool(carry_over)
        self.max_episode_steps = max_episode_steps
        self._episode_batch: EpisodeBatch | None = None
        self.pg_extras_algorithm = type(self).__name__  # saved with the model: load() tells which algorithm saved a file
        #: warns once per run that cannot learn (pg_extras.signal: the cause and the fix)
        self.signal_monitor = SignalMonitor(type(self).__name__)
        self.signal_monitor.observe("gamma_zero", self.episodic and gamma == 0.0, immediate=True)
        if _init_setup_model:
            self._setup_model()

    @property
    def episodic(self) -> bool:
        """Whether the algorithm collects whole episodes (every estimator but ``"gae"``)."""
        return self.advantage_estimator != "gae"

    @property
    def core_estimator(self) -> str:
        """The :func:`pg_extras.estimate_advantages` estimator behind ``advantage_estimator``."""
        return self.advantage_estimator

    @property
    def uses_groups(self) -> bool:
        """Whether the episodes are group members (``advantage_estimator="group"``)."""
        return self.advantage_estimator == "group"

    # ------------------------------------------------------------------ setup
    def _setup_model(self) -> None:
        if not self.episodic:
            super()._setup_model()
            return
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.rollout_buffer = EpisodeBuffer(  # type: ignore[assignment]
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
            carry_over=self.carry_over or self.uses_groups,
            max_episode_steps=self.max_episode_steps or max(10 * self.n_steps, 10_000),
        )
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, use_sde=self.use_sde, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._maybe_recommend_cpu(self.policy_aliases["MlpPolicy"].__name__)
        self._make_slots()

    def _make_slots(self) -> None:
        scheduler = None
        if self.uses_groups:
            assert self.group_size is not None
            scheduler = GroupScheduler(
                self.n_envs,
                self.group_size,
                seed=self.seed,
                schedule=self.group_schedule,
                max_policy_lag=self.max_policy_lag,
                greedy_member=self.advantage_mode == "remax",
            )
        self._slots = SlotEpisodes(self.n_envs, scheduler, gamma=self.gamma)
        self._greedy_returns: dict[int, float] = {}  # ReMax: the greedy return of each group of the last rollout

    def set_random_seed(self, seed: int | None = None) -> None:
        """Seed python, numpy, torch, the action space, the env and the generator of the groups' reset seeds."""
        super().set_random_seed(seed)
        slots = getattr(self, "_slots", None)
        if seed is not None and slots is not None and slots.scheduler is not None:
            slots.scheduler.seed(seed)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """Set a new env (same number of envs); the next ``learn`` resets it and starts new episodes."""
        super().set_env(env, force_reset=force_reset)
        if self.episodic:
            self._slots.needs_reset = True

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        # SB3 resets the env here: the episodes in flight are lost, the new ones get their group seeds first.
        will_reset = self.episodic and self.env is not None and (reset_num_timesteps or self._last_obs is None)
        if will_reset:
            assert self.env is not None
            self._slots.prepare_reset(self.env)
            self.rollout_buffer.clear()  # type: ignore[union-attr]
        result = super()._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar)
        if will_reset:
            assert self.env is not None
            self._slots.after_reset(self.env)
        return result

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfEpisodic],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfEpisodic:
        """SB3's ``load``, with a clear error for a missing file or a file saved by another algorithm."""
        saved_by = _saved_algorithm(path)
        if saved_by is not None and saved_by != cls.__name__:
            raise ValueError(f"{path} was saved by {saved_by}, not {cls.__name__}: load it with {saved_by}.load(...).")
        try:
            return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except (KeyError, RuntimeError, AssertionError, ValueError) as error:
            if saved_by is not None:
                raise
            raise ValueError(
                f"{path} could not be loaded as {cls.__name__} ({type(error).__name__}: {error}); it was not saved by a "
                "pg-extras algorithm: load it with the class that saved it."
            ) from error

    def set_parameters(self, load_path_or_dict: Any, exact_match: bool = True, device: th.device | str = "auto") -> None:
        """SB3's ``set_parameters``; refuses parameters with NaN or infinite values (the model is left unchanged)."""
        before = {name: p.detach().clone() for name, p in self.policy.state_dict().items()}
        super().set_parameters(load_path_or_dict, exact_match=exact_match, device=device)
        bad = [name for name, p in self.policy.state_dict().items() if p.is_floating_point() and not th.isfinite(p).all()]
        if bad:
            self.policy.load_state_dict(before)
            raise ValueError(f"set_parameters: {bad[:3]} hold NaN or infinite values; the model was left unchanged.")

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # The last rollout can overshoot total_timesteps: keep schedules in their [0, 1] domain (RL Zoo's lin_<x>
        # would otherwise give a negative clip range or learning rate).
        super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        self._current_progress_remaining = min(max(self._current_progress_remaining, 0.0), 1.0)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_slots", "_episode_batch", "_greedy_returns", "signal_monitor"]

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        """SB3's, with the schedule's value checked at every update (a NaN or negative rate mid-run is an error that
        names ``learning_rate`` and the progress, not NaN weights or a gradient ascent)."""
        progress = self._current_progress_remaining
        rate = self.lr_schedule(progress)
        check_float(
            "learning_rate",
            rate,
            0.0,
            hint=f"the schedule returned {rate!r} at progress_remaining={progress:.4g}: make it finite and >= 0 on [0, 1]",
        )
        super()._update_learning_rate(optimizers)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """SB3's ``save``, atomic for a file path: the model is written to a temporary file next to ``path`` and
        renamed over it only once complete, so a failing save never destroys an existing file (SB3 truncates it)."""
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude, include)
            return
        final = pathlib.Path(path)
        if final.suffix == "":  # as SB3's open_path
            final = final.with_suffix(".zip")
        final.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(handle)
        tmp = pathlib.Path(tmp_name)
        try:
            with open(tmp, "wb") as file:
                super().save(file, exclude, include)  # type: ignore[arg-type]
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

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
        rollout_buffer: Any,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` steps per env: the one collection loop of every algorithm and estimator.

        Whole episodes (every estimator but ``"gae"``): the unfinished episodes and the incomplete groups are kept for
        the next rollout. ``"gae"``: the steps fill SB3's ``RolloutBuffer`` as SB3's own ``collect_rollouts`` does
        (same callbacks, info buffers, time-limit bootstrap ``r += gamma V(s_final)`` and
        ``compute_returns_and_advantage``), except that the values are computed in one batch at the end of the rollout
        instead of one forward pass per step (the policy does not change during a rollout, so they are the same
        values). :return: False if a callback stopped training.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        slots = self._slots if self.episodic else None
        if slots is not None and slots.needs_reset:  # the previous rollout was interrupted: start afresh
            slots.prepare_reset(env)
            rollout_buffer.clear()
            self._last_obs = env.reset()  # type: ignore[assignment]
            self._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
            slots.after_reset(env)
        self.policy.set_training_mode(False)
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()
        try:
            return self._collect(env, callback, rollout_buffer, n_rollout_steps)
        except BaseException:
            # A callback or the env raised (KeyboardInterrupt included): the running episodes lost this step and
            # cannot be completed. Drop them, so that a later learn(reset_num_timesteps=False) starts afresh
            # instead of training on episodes without their first steps. (A step buffer is reset by the next rollout.)
            if slots is not None:
                slots.interrupt()
            raise

    def _sample_actions(self, obs_tensor: Any, greedy: np.ndarray | None) -> tuple[th.Tensor, th.Tensor]:
        """``(actions, log_prob)`` at one env step; ``greedy``: the envs that act with the deterministic action."""
        if greedy is not None and greedy.any():  # ReMax's greedy members: one forward pass for both kinds of member
            distribution = self.policy.get_distribution(obs_tensor)
            flag = th.as_tensor(greedy, device=self.device).reshape(-1, *[1] * (len(self.action_space.shape)))
            actions = th.where(flag, distribution.get_actions(deterministic=True), distribution.get_actions())
            log_probs = distribution.log_prob(actions)
            return actions.reshape((-1, *self.action_space.shape)), log_probs
        sample = getattr(self.policy, "sample_actions", None)  # our policies: no value head at every step
        if sample is not None:
            return sample(obs_tensor)
        actions, _, log_probs = self.policy(obs_tensor)  # any other policy: its own forward, as in SB3
        return actions, log_probs

    def _collect(self, env: VecEnv, callback: BaseCallback, rollout_buffer: Any, n_rollout_steps: int) -> bool:
        """The loop of :meth:`collect_rollouts` (see there)."""
        slots = self._slots if self.episodic else None
        timeouts: list[tuple[int, int, Any]] = []  # "gae": (step, env, final observation) of time-limit truncations
        n_steps, active_steps = 0, 0
        dones = self._last_episode_starts
        no_values = th.zeros(env.num_envs)  # "gae": the values are computed after the loop
        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            greedy = slots.greedy.copy() if slots is not None else None
            with th.inference_mode():  # (both buffers store numpy copies: no inference tensor reaches training)
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, log_probs = self._sample_actions(obs_tensor, greedy)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            self.num_timesteps += env.num_envs
            round_end = False
            if slots is not None:
                episode, group = slots.episode.copy(), slots.group.copy()
                infos, round_end = slots.step(env, dones, infos, rewards)

            callback.update_locals(locals())
            if not callback.on_step():
                if slots is not None:
                    slots.interrupt()  # this step is not stored: the running episodes cannot be completed
                return False

            self._update_info_buffer(infos, dones)
            if slots is None:  # SB3's RolloutBuffer, as SB3's collect_rollouts fills it (values: after the loop)
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.reshape(-1, 1)
                for idx in np.flatnonzero(dones):
                    final_obs = infos[idx].get("terminal_observation")
                    if final_obs is not None and infos[idx].get("TimeLimit.truncated", False):
                        timeouts.append((n_steps, int(idx), final_obs))
                rollout_buffer.add(self._last_obs, actions, rewards, self._last_episode_starts, no_values, log_probs)
                n_steps += 1
                self._last_obs = new_obs  # type: ignore[assignment]
                self._last_episode_starts = dones
                continue
            n_steps += 1
            active_steps += int((episode >= 0).sum())
            assert greedy is not None
            episode[greedy] = -1  # a greedy member's steps are not stored: only its return is used
            ended = np.asarray(dones, dtype=bool)
            truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & ended
            rollout_buffer.add(
                self._last_obs,
                actions,
                rewards,
                ended & ~truncated,
                truncated,
                log_probs,
                episode,
                group,
                self._terminal_values(infos, truncated),
            )
            if round_end:  # lockstep: every slot has finished its episode of the round; open groups go on
                slots.prepare_reset(env, round_end=True)
                new_obs = env.reset()
                dones = np.ones_like(dones)
                slots.after_reset(env)
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        if slots is None:
            self._finish_step_rollout(rollout_buffer, timeouts, dones)
        else:
            self._finish_episodic_rollout(rollout_buffer, n_steps, active_steps, env.num_envs)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _batched_values(self, observations: Any, n: int) -> th.Tensor:
        """``V(s)`` of ``n`` stacked observations (an array, or a dict of arrays), in chunks of 4096."""
        parts = []
        with th.no_grad():
            for start in range(0, n, 4096):
                if isinstance(observations, dict):
                    chunk: Any = {k: v[start : start + 4096] for k, v in observations.items()}
                else:
                    chunk = observations[start : start + 4096]
                parts.append(self.policy.predict_values(obs_as_tensor(chunk, self.device)).flatten())  # type: ignore[arg-type]
        return th.cat(parts)

    def _finish_step_rollout(self, rollout_buffer: Any, timeouts: list[tuple[int, int, Any]], dones: np.ndarray) -> None:
        """``"gae"``: the rollout's values in one batch, SB3's time-limit bootstrap, returns and advantages."""
        buffer_size, n_envs = rollout_buffer.buffer_size, rollout_buffer.n_envs
        observations = rollout_buffer.observations
        if isinstance(observations, dict):
            flat: Any = {k: v.reshape(buffer_size * n_envs, *v.shape[2:]) for k, v in observations.items()}
        else:
            flat = observations.reshape(buffer_size * n_envs, *observations.shape[2:])
        values = self._batched_values(flat, buffer_size * n_envs)
        rollout_buffer.values[:] = values.cpu().numpy().reshape(buffer_size, n_envs)
        if timeouts:  # SB3: r += gamma * V(s_final) where a time limit cut the episode
            finals = [obs for _, _, obs in timeouts]
            if isinstance(finals[0], dict):
                stacked: Any = {k: np.stack([o[k] for o in finals]) for k in finals[0]}
            else:
                stacked = np.stack(finals)
            final_values = self._batched_values(stacked, len(finals)).cpu().numpy()
            for (step, idx, _), value in zip(timeouts, final_values, strict=True):
                rollout_buffer.rewards[step, idx] += self.gamma * value
        with th.no_grad():
            last_values = self.policy.predict_values(obs_as_tensor(self._last_obs, self.device))  # type: ignore[arg-type]
        rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)

    def _finish_episodic_rollout(self, rollout_buffer: Any, n_steps: int, active_steps: int, n_envs: int) -> None:
        """Whole episodes: hand the complete episodes (and groups) to training, log the scheduler's counters."""
        slots = self._slots
        ready = None
        if slots.scheduler is not None:
            complete = slots.scheduler.pop_complete()
            ready = [e for g in complete for e in g.episodes]
            if slots.scheduler.greedy_member:
                self._greedy_returns = {g.group: g.greedy_return for g in complete}
                greedy_mean = float(np.mean(list(self._greedy_returns.values()))) if complete else float("nan")
                self.logger.record("rollout/greedy_return_mean", greedy_mean)
            self.logger.record("rollout/group_policy_lag", float(np.mean([g.lag for g in complete])) if complete else 0.0)
            self.logger.record("rollout/groups_dropped_stale", slots.scheduler.groups_dropped_stale)
            self.logger.record("rollout/groups_abandoned", slots.scheduler.groups_abandoned)
        self._episode_batch = rollout_buffer.finalize(ready, slots.pop_discarded())
        self.logger.record("rollout/active_step_fraction", active_steps / (n_steps * n_envs))

    # ------------------------------------------------------------------ training helpers
    def _training_episodes(self) -> EpisodeBatch | None:
        """The ready episodes of the last rollout, or ``None`` (with a warning) if there is none."""
        batch, self._episode_batch = self._episode_batch, None
        if batch is not None:  # a Gaussian policy samples NaN actions from NaN observations without any error
            for obs in batch.observations.values() if isinstance(batch.observations, dict) else [batch.observations]:
                check_finite("observations", obs, hint=OBSERVATIONS_HINT)
        self.logger.record("train/n_episodes", 0 if batch is None else int(batch.lengths.numel()))
        self.logger.record("train/n_steps_used", 0 if batch is None else batch.num_steps)
        self.logger.record("train/carried_steps", self.rollout_buffer.num_pending_steps)  # type: ignore[union-attr]
        if self.uses_groups:
            self.signal_monitor.observe("no_complete_group", batch is None)
        if batch is None and not self.uses_groups:
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
        return batch

    def _advantages(self, batch: EpisodeBatch, values: th.Tensor | None = None) -> AdvantageEstimate:
        """Advantages of the episodes with the configured estimator (:func:`pg_extras.estimate_advantages`)."""
        next_values = batch.next_values if self.bootstrap_truncated else None
        estimate = estimate_advantages(
            self.core_estimator,
            batch.rewards,
            batch.terminated,
            batch.truncated,
            gamma=self.gamma,
            values=values,
            next_values=next_values,
            group_ids=batch.group,
            group_mode=self.advantage_mode,
            group_scale=self.advantage_scale,
            rloo=self.rloo,
            baseline_returns=self._greedy_baselines(batch) if self.uses_groups and self.advantage_mode == "remax" else None,
        )
        zero_spread = self.uses_groups and estimate.frac_zero_std_groups == 1.0
        if self.uses_groups:
            self.logger.record("rollout/frac_zero_std_groups", estimate.frac_zero_std_groups)
            self.logger.record("rollout/group_return_std", estimate.group_return_std)
            self.signal_monitor.observe("zero_spread", zero_spread)
        if not zero_spread and batch.num_steps > 0:
            rewards = batch.rewards
            constant = bool((rewards == rewards.reshape(-1)[0]).all())
            detail = f"every reward is {float(rewards.reshape(-1)[0]):g}" if constant else "the estimator gave zeros"
            self.signal_monitor.observe("zero_advantage", not bool(estimate.advantages.any()), detail=detail)
        return estimate

    def _greedy_baselines(self, batch: EpisodeBatch) -> th.Tensor:
        """ReMax: the greedy return of each step's group (delivered with the group by the scheduler)."""
        groups, index = th.unique(batch.group, return_inverse=True)
        values = [self._greedy_returns.get(g) for g in groups.tolist()]
        missing = [g for g, v in zip(groups.tolist(), values, strict=True) if v is None]
        if missing:
            raise RuntimeError(f"advantage_mode='remax': no greedy return for the groups {missing[:5]} of this batch.")
        return th.tensor(values, dtype=batch.rewards.dtype, device=batch.rewards.device)[index]

    def _chunks(self, n: int) -> list[slice]:
        size = n if self.batch_size is None else self.batch_size
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    def _policy_actions(self, actions: th.Tensor) -> th.Tensor:
        return actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else actions

    def _policy_gradient_step(
        self, batch: EpisodeBatch, advantages: th.Tensor, parameters: Callable[[], Sequence[th.nn.Parameter]] | None = None
    ) -> None:
        """One step of the ``"pg"`` rule: ``mean(-log pi(a|s) A) - ent_coef * mean(H)`` over the batch.

        Gradients of the ``batch_size`` chunks are accumulated, so the step equals the full-batch one. Logs
        ``train/policy_gradient_loss``, ``train/entropy_loss``, ``train/approx_kl`` (> 0 only for carried steps) and
        ``train/std`` (Gaussian policies).
        """
        advantages = advantages.detach().to(self.device)
        n = int(advantages.numel())
        optimizer = self.policy.optimizer
        optimizer.zero_grad()
        pg_total, ent_total, kl_total = 0.0, 0.0, 0.0
        for chunk in self._chunks(n):
            part = batch.take(chunk)
            distribution = self.policy.get_distribution(part.observations)
            log_prob = distribution.log_prob(self._policy_actions(part.actions))
            entropy = entropy_or_estimate(distribution.entropy(), lambda d=distribution: d.log_prob(d.sample()))
            terms = policy_objective(
                self.objective_options, log_prob, part.old_log_prob, advantages[chunk], ent_coef=self.ent_coef, entropy=entropy
            )
            (terms.total().sum() / n).backward()
            pg_total += terms.policy.sum().item()
            ent_total -= entropy.sum().item()
            kl_total += terms.approx_kl.sum().item()  # type: ignore[union-attr]
        params = list(parameters() if parameters is not None else self.policy.parameters())
        if self.max_grad_norm is not None:
            th.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        optimizer.step()
        self.logger.record("train/policy_gradient_loss", pg_total / n)
        self.logger.record("train/entropy_loss", ent_total / n)
        self.logger.record("train/approx_kl", kl_total / n)
        if getattr(self.policy, "log_std", None) is not None:
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    def _finish_update(self) -> None:
        """Count a policy update (SB3's ``_n_updates``; the group scheduler's policy version)."""
        self._n_updates += 1
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        slots = getattr(self, "_slots", None)
        if slots is not None and slots.scheduler is not None:
            slots.scheduler.new_policy_version()

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
