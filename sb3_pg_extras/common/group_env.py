"""Synchronised group resets for a Stable-Baselines3 ``VecEnv`` (GRPO, DESIGN.md "GRPO", seed 2.6).

GRPO's "query" for a control task is an initial state: a *group* is ``group_size`` envs (columns
``[k G, (k + 1) G)`` of the ``VecEnv``) whose episodes start from the same reset seed. :class:`GroupSync`
drives a ``VecEnv`` in *rounds*:

1. :meth:`GroupSync.reset` draws one seed per group, gives it to every member through the ``VecEnv``'s
   per-env reset seeds and resets the whole ``VecEnv`` (so ``VecNormalize``, ``VecFrameStack``, ... see a
   normal reset and ``Dummy``/``SubprocVecEnv`` pass the seeds to the sub-envs);
2. each env plays one episode; an env that finished *waits*: the ``VecEnv`` still steps it (it cannot
   pause one column), but :meth:`GroupSync.filter_step` marks those steps inactive, zeroes their rewards,
   reports ``done=False`` and removes their ``episode``/``terminal_observation`` infos, so they are
   neither trained on nor logged;
3. when every env has finished, the round is over and the next :meth:`GroupSync.reset` starts the next
   round: all members of a group restart together, from the same seed.

All groups of the ``VecEnv`` share the rounds (they restart at the same time), which is the simplest
schedule that works through every ``VecEnv`` wrapper: a ``VecEnv`` can only reset all its columns at once.
The sub-envs must allow early resets (``Monitor(allow_early_resets=True)``, SB3's default) and must end
their episodes (termination or a time limit), otherwise a round never ends.

Example::

    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> env = make_vec_env("CartPole-v1", n_envs=4)
    >>> sync = GroupSync(num_envs=4, group_size=2, seed=0)
    >>> obs = sync.reset(env)
    >>> bool((obs[0] == obs[1]).all()), bool((obs[2] == obs[3]).all())
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs

__all__ = ["GroupStep", "GroupSync", "check_group_size"]

# Infos of a waiting env that must not reach SB3's episode statistics.
_WAITING_INFO_KEYS = ("episode", "terminal_observation", "is_success", "TimeLimit.truncated")


def check_group_size(group_size: Any, num_envs: int) -> None:
    """Raise ``ValueError`` unless ``group_size`` is an integer >= 2 that divides ``num_envs``."""
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2 (a group compares at least two episodes), got {group_size!r}.")
    if num_envs % group_size != 0:
        raise ValueError(
            f"group_size={group_size} does not divide the number of envs ({num_envs}): the G envs of a group reset "
            f"together, so use n_envs = k * group_size (e.g. n_envs={group_size * max(1, round(num_envs / group_size))}) "
            f"or a group_size that divides {num_envs}."
        )


@dataclass
class GroupStep:
    """One ``VecEnv`` step seen through :class:`GroupSync`."""

    active: np.ndarray  # [N] bool: the step belongs to the env's episode of this round (train on it)
    rewards: np.ndarray  # [N] rewards, 0 where not active
    dones: np.ndarray  # [N] bool: the env's round episode ended at this step (False where waiting)
    infos: list[dict[str, Any]]  # infos, with the episode statistics of waiting envs removed
    round_end: bool  # every env has finished: call GroupSync.reset before the next step


class GroupSync:
    """Round bookkeeping for synchronised group resets (see the module docstring).

    :param num_envs: number of envs of the ``VecEnv``.
    :param group_size: envs per group ``G`` (must divide ``num_envs``); group ``k`` is columns ``[kG, (k+1)G)``.
    :param seed: seed of the generator that draws the groups' reset seeds (``None``: from numpy's global generator).
    """

    def __init__(self, num_envs: int, group_size: int, seed: int | None = None) -> None:
        check_group_size(group_size, num_envs)
        self.num_envs = int(num_envs)
        self.group_size = int(group_size)
        self.n_groups = self.num_envs // self.group_size
        self.active = np.zeros(self.num_envs, dtype=bool)
        self.needs_reset = True
        self.round_seeds: np.ndarray | None = None  # [n_groups] seeds of the current round
        self.seed(seed)

    def seed(self, seed: int | None = None) -> None:
        """Re-seed the generator of the groups' reset seeds."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self._rng = np.random.default_rng(seed)

    def group_of(self, env_index: np.ndarray | int) -> np.ndarray | int:
        """Group index of env column(s) ``env_index``."""
        return env_index // self.group_size

    def prepare_reset(self, env: VecEnv) -> list[int]:
        """Draw the next round's group seeds and set them as the reset seeds of ``env`` (used by its next ``reset()``).

        :return: the per-env seeds (equal within a group).
        """
        if env.num_envs != self.num_envs:
            raise ValueError(f"The env has {env.num_envs} envs but GroupSync was built for {self.num_envs}: rebuild it.")
        base = env.unwrapped
        if not isinstance(getattr(base, "_seeds", None), list) or len(base._seeds) != self.num_envs:
            raise TypeError(
                f"{type(base).__name__} does not take per-env reset seeds (VecEnv._seeds): use a DummyVecEnv or "
                "SubprocVecEnv (optionally wrapped in VecNormalize, VecFrameStack, ...)."
            )
        self.round_seeds = self._rng.integers(0, 2**31 - 1, size=self.n_groups)
        seeds = [int(self.round_seeds[i // self.group_size]) for i in range(self.num_envs)]
        base._seeds = list(seeds)
        return seeds

    def mark_reset(self) -> None:
        """Start a round: every env is active (call right after the ``env.reset()`` that used :meth:`prepare_reset`)."""
        self.active[:] = True
        self.needs_reset = False

    def reset(self, env: VecEnv) -> VecEnvObs:
        """Start a new round: reset ``env`` with one seed per group and return its observation."""
        self.prepare_reset(env)
        obs = env.reset()
        self.mark_reset()
        return obs

    def filter_step(self, rewards: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> GroupStep:
        """Mask one ``env.step`` result: waiting envs get reward 0, ``done=False`` and no episode infos.

        :return: :class:`GroupStep`; ``round_end`` tells that every env has finished its round episode.
        """
        if self.needs_reset:
            raise RuntimeError("GroupSync.filter_step called before GroupSync.reset: start a round first.")
        active = self.active.copy()
        dones = np.asarray(dones, dtype=bool)
        out_dones = dones & active
        out_rewards = np.where(active, rewards, np.zeros_like(rewards))
        out_infos = []
        for i, info in enumerate(infos):
            if active[i]:
                out_infos.append(info)
            else:
                out_infos.append({k: v for k, v in info.items() if k not in _WAITING_INFO_KEYS} | {"group_waiting": True})
        self.active &= ~out_dones
        round_end = not self.active.any()
        if round_end:
            self.needs_reset = True
        return GroupStep(active=active, rewards=out_rewards, dones=out_dones, infos=out_infos, round_end=round_end)
