"""Episodes of a Stable-Baselines3 ``VecEnv`` and their group jobs (docs/design.md "The episode and group engine").

:class:`SlotEpisodes` tells which episode each env slot is playing. Without groups an episode id is a counter; with
groups (GRPO, or any algorithm given ``advantage_estimator="group"``) the jobs come from the core's
:class:`pg_extras.GroupScheduler` and every member of a group starts from the group's reset seed:

* ``schedule="async"`` (default): a slot whose episode ends starts the next member at once. SB3's vec envs reset a
  finished sub-env *inside* ``step()``, so the seed of a slot's next episode is handed to the sub-env beforehand, through
  :class:`GroupResetWrapper` (a gymnasium wrapper whose ``reset(seed=None)`` uses the seed it was given). It is added
  to the sub-envs of a ``DummyVecEnv`` automatically (its public ``envs`` list) and is reached through the public
  ``VecEnv.env_method`` in every process, so ``SubprocVecEnv`` (spawn or fork) and every ``VecEnvWrapper``
  (``VecNormalize``, ``VecFrameStack``, ``VecTransposeImage``, ...) work unchanged.
* ``schedule="lockstep"``: rounds; every slot plays one episode, a slot that finished waits (its steps are not
  stored and its episode infos are hidden from the logs) until the round is over, then the whole ``VecEnv`` is reset
  with one seed per slot. A ``SubprocVecEnv`` built by the user without :class:`GroupResetWrapper` can only be
  driven this way: the seeds of a vec-level reset then go through SB3's per-env reset seeds, the one private access
  of this package (:func:`set_reset_seeds`).

With ``GroupScheduler(greedy_member=True)`` (ReMax) a slot playing a greedy job has ``greedy[slot]`` True: the
algorithm acts with the deterministic action there and does not store its steps; :meth:`SlotEpisodes.step` sums its
discounted return (``gamma``) and hands it to the scheduler, which delivers it with the group
(:attr:`pg_extras.CompletedGroup.greedy_return`). Its episode statistics are kept out of SB3's ``ep_info_buffer``.

Example::

    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> from pg_extras import GroupScheduler
    >>> env = make_vec_env("CartPole-v1", n_envs=3)
    >>> slots = SlotEpisodes(3, GroupScheduler(3, group_size=2, seed=0))
    >>> slots.prepare_reset(env)
    >>> obs = env.reset()
    >>> slots.after_reset(env)
    >>> bool((obs[0] == obs[1]).all()), bool((obs[0] == obs[2]).all())  # members 0, 1 of group 0; slot 2: group 1
    (True, False)
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from pg_extras import GroupJob, GroupScheduler

__all__ = ["GroupResetWrapper", "SlotEpisodes", "set_reset_seeds"]

# Infos of a waiting env (lockstep) that must not reach SB3's episode statistics.
_WAITING_INFO_KEYS = ("episode", "terminal_observation", "is_success", "TimeLimit.truncated")
_SEED_METHOD = "set_next_reset_seed"


class GroupResetWrapper(gym.Wrapper):
    """Gymnasium wrapper: the next ``reset()`` uses the seed given by :meth:`set_next_reset_seed` (once).

    SB3's vec envs auto-reset a finished sub-env with ``reset()`` (no seed); this wrapper lets the group scheduler
    choose that seed in advance. Pass it as ``make_vec_env(..., wrapper_class=GroupResetWrapper)`` to build a
    ``SubprocVecEnv`` for asynchronous groups (a ``DummyVecEnv``'s sub-envs are wrapped automatically).

    Example::

        >>> env = GroupResetWrapper(gym.make("CartPole-v1"))
        >>> env.set_next_reset_seed(7)
        >>> a, _ = env.reset()
        >>> b, _ = gym.make("CartPole-v1").reset(seed=7)
        >>> bool((a == b).all())
        True
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._next_seed: int | None = None

    def set_next_reset_seed(self, seed: int | None) -> None:
        """Seed of the next ``reset()`` called without a seed (``None``: an ordinary reset)."""
        self._next_seed = None if seed is None else int(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if self._next_seed is not None:  # the scheduler's seed wins over the VecEnv's own per-env seeds
            seed, self._next_seed = self._next_seed, None
        if options is None:  # as SB3: envs whose reset takes no ``options`` keep working
            return self.env.reset(seed=seed)
        return self.env.reset(seed=seed, options=options)


def _has_seed_wrapper(env: VecEnv) -> bool:
    """Whether every sub-env has :class:`GroupResetWrapper`; wraps the sub-envs of a ``DummyVecEnv`` if needed."""
    base = env.unwrapped
    if isinstance(base, DummyVecEnv):
        for i, sub_env in enumerate(base.envs):
            if not isinstance(sub_env, GroupResetWrapper):
                base.envs[i] = GroupResetWrapper(sub_env)
        return True
    return all(env.env_is_wrapped(GroupResetWrapper))


def set_reset_seeds(env: VecEnv, seeds: list[int | None], wrapped: bool) -> None:
    """Seeds of the next vec-level ``env.reset()``, one per sub-env.

    With :class:`GroupResetWrapper` the seeds go through ``env_method`` (public); otherwise through the ``VecEnv``'s
    per-env reset seeds, which SB3 only exposes as ``VecEnv.seed(base)`` (``base + i`` for sub-env ``i``): the list
    ``_seeds`` is written directly. This is the only private SB3 attribute this package touches.
    """
    if wrapped:
        for i, seed in enumerate(seeds):
            env.env_method(_SEED_METHOD, seed, indices=[i])
        return
    base = env.unwrapped
    if not isinstance(getattr(base, "_seeds", None), list) or len(base._seeds) != len(seeds):
        raise TypeError(
            f"{type(base).__name__} takes no per-env reset seeds: build the env with "
            "make_vec_env(..., wrapper_class=sb3_pg_extras.GroupResetWrapper) or use a DummyVecEnv / SubprocVecEnv."
        )
    base._seeds = list(seeds)


class SlotEpisodes:
    """Which episode (and which group job) each of the ``num_envs`` slots of a ``VecEnv`` is playing.

    :param num_envs: number of env slots.
    :param scheduler: the group scheduler (``None``: no groups; episode ids are a counter and resets are unseeded).
    :param gamma: discount of the greedy members' returns (``scheduler.greedy_member``).
    """

    def __init__(self, num_envs: int, scheduler: GroupScheduler | None = None, gamma: float = 1.0) -> None:
        self.num_envs = num_envs
        self.gamma = float(gamma)
        self.greedy = np.zeros(num_envs, dtype=bool)  # the slot plays a greedy member (ReMax)
        self._greedy_return = np.zeros(num_envs, dtype=np.float64)
        self._greedy_discount = np.ones(num_envs, dtype=np.float64)
        self.scheduler = scheduler
        self.lockstep = scheduler is not None and scheduler.schedule == "lockstep"
        self.episode = np.full(num_envs, -1, dtype=np.int64)  # current episode of each slot (-1: waiting)
        self.group = np.full(num_envs, -1, dtype=np.int64)
        self._next: list[GroupJob | None] = [None] * num_envs  # async: the job reserved for the slot's next episode
        self._counter = 0
        self._discarded: list[int] = []
        self._wrapped = False
        self._env_id: int | None = None
        self.needs_reset = True

    # ------------------------------------------------------------------ full resets
    def prepare_reset(self, env: VecEnv, round_end: bool = False) -> None:
        """Before a vec-level ``env.reset()``: every running episode is lost; the new ones get their seeds.

        ``round_end``: the reset that ends a lock-step round, where no episode is running; the groups with members
        still to hand out go on in the next round (so a group larger than the number of envs completes over several
        rounds).
        """
        if env.num_envs != self.num_envs:
            raise ValueError(f"The env has {env.num_envs} envs but the algorithm was set up for {self.num_envs}.")
        if round_end:
            assert not (self.episode >= 0).any(), "a lock-step round ends when no episode is running"
        else:
            self._discard_running()
        if self.scheduler is None:
            self.episode[:] = self._new_ids(self.num_envs)
            return
        if self._env_id != id(env):  # checked once per env (a round trip per sub-env for a SubprocVecEnv)
            self._env_id, self._wrapped = id(env), _has_seed_wrapper(env)
        if not self._wrapped and not self.lockstep:
            warnings.warn(
                f"The sub-envs of {type(env.unwrapped).__name__} have no GroupResetWrapper, so SB3's auto-reset cannot "
                "start a group member from its seed: groups run in lock-step rounds (finished envs wait). Build the env "
                "with make_vec_env(..., wrapper_class=sb3_pg_extras.GroupResetWrapper) for asynchronous groups.",
                RuntimeWarning,
                stacklevel=3,
            )
            self.lockstep = True
        jobs = [self.scheduler.assign(slot) for slot in range(self.num_envs)]
        self._set_jobs(jobs)
        set_reset_seeds(env, [None if j is None else j.seed for j in jobs], self._wrapped)

    def after_reset(self, env: VecEnv) -> None:
        """After the vec-level reset: reserve each slot's next job (async groups) and hand its seed to the sub-env."""
        self.needs_reset = False
        if self.scheduler is None or self.lockstep:
            return
        for slot in range(self.num_envs):
            self._reserve(env, slot)

    # ------------------------------------------------------------------ steps
    def step(
        self, env: VecEnv, dones: np.ndarray, infos: list[dict[str, Any]], rewards: np.ndarray | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """After ``env.step``: end the finished episodes and start the next ones.

        :param rewards: this step's rewards (needed when a slot plays a greedy member).
        :return: ``(infos, round_end)``; in lockstep the infos of waiting slots are stripped of their episode
            statistics, and ``round_end`` says that the caller must reset the env (:meth:`prepare_reset` first).
            Infos of greedy members that ended are stripped too (``"greedy_episode": True``).
        """
        waiting = self.episode < 0  # lockstep: slots whose episode of the round is over
        ended = np.flatnonzero(np.asarray(dones, dtype=bool) & ~waiting)
        if self.scheduler is None:
            self.episode[ended] = self._new_ids(len(ended))
            return infos, False
        greedy_ended: list[int] = []
        if self.greedy.any():
            if rewards is None:
                raise ValueError("SlotEpisodes.step needs the rewards while a slot plays a greedy member.")
            reward = np.asarray(rewards, dtype=np.float64).reshape(self.num_envs)
            self._greedy_return += np.where(self.greedy, self._greedy_discount * reward, 0.0)
            self._greedy_discount *= np.where(self.greedy, self.gamma, 1.0)
        for slot in ended:
            if self.greedy[slot]:
                greedy_ended.append(int(slot))
                self.scheduler.finish(int(self.episode[slot]), greedy_return=float(self._greedy_return[slot]))
            else:
                self.scheduler.finish(int(self.episode[slot]))
            self._clear_greedy(slot)
            if self.lockstep:
                self.episode[slot] = self.group[slot] = -1
            else:
                job = self._next[slot]
                assert job is not None
                self._set_job(slot, job)
                self._reserve(env, slot)
        if greedy_ended:
            infos = list(infos)
            for slot in greedy_ended:
                infos[slot] = {k: v for k, v in infos[slot].items() if k not in _WAITING_INFO_KEYS} | {"greedy_episode": True}
        if not self.lockstep:
            return infos, False
        if waiting.any():
            infos = [
                ({k: v for k, v in info.items() if k not in _WAITING_INFO_KEYS} | {"group_waiting": True})
                if waiting[i]
                else info
                for i, info in enumerate(infos)
            ]
        return infos, bool((self.episode < 0).all())

    def interrupt(self) -> None:
        """The rollout was stopped (a callback returned False or raised, the env raised): the running episodes cannot
        be completed; the next rollout resets the env."""
        self._discard_running()
        self.needs_reset = True

    def pop_discarded(self) -> list[int]:
        """Episodes whose stored steps must be thrown away (abandoned, or in a dropped / stale group)."""
        out, self._discarded = self._discarded, []
        if self.scheduler is not None:
            out += self.scheduler.pop_discarded()
        return out

    # ------------------------------------------------------------------ helpers
    def _new_ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._counter, self._counter + n, dtype=np.int64)
        self._counter += n
        return ids

    def _discard_running(self) -> None:
        running = [int(e) for e in self.episode if e >= 0]
        if self.scheduler is None:
            self._discarded += running
        else:
            self.scheduler.abandon_all()
        self._next = [None] * self.num_envs
        self.episode[:] = -1
        self.group[:] = -1
        for slot in range(self.num_envs):
            self._clear_greedy(slot)

    def _clear_greedy(self, slot: int) -> None:
        self.greedy[slot] = False
        self._greedy_return[slot] = 0.0
        self._greedy_discount[slot] = 1.0

    def _set_job(self, slot: int, job: GroupJob) -> None:
        self.episode[slot] = job.episode
        self.group[slot] = job.group
        self.greedy[slot] = job.greedy

    def _set_jobs(self, jobs: list[GroupJob | None]) -> None:
        for slot, job in enumerate(jobs):
            if job is not None:
                self._set_job(slot, job)

    def _reserve(self, env: VecEnv, slot: int) -> None:
        assert self.scheduler is not None
        job = self.scheduler.assign(slot)
        self._next[slot] = job
        env.env_method(_SEED_METHOD, None if job is None else job.seed, indices=[slot])
