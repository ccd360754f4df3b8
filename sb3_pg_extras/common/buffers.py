"""The episode buffer of the episodic SB3 algorithms (REINFORCE, REINFORCE with baseline, GRPO, TRPO's Monte-Carlo
and group paths): it trains on *whole* episodes only.

A rollout stores ``n_steps`` steps of every env, time-major as SB3's ``RolloutBuffer``, with the id of the episode
each step belongs to (:class:`~sb3_pg_extras.common.group_env.SlotEpisodes`). :meth:`EpisodeBuffer.finalize` merges
them with the steps kept from earlier rollouts, orders everything episode by episode, and splits it into

* the *ready* episodes, returned as one flat :class:`EpisodeBatch` (episodes one after another, each ending with
  ``terminated`` or ``truncated``, the layout :func:`pg_extras.estimate_advantages` takes as ``[S]``);
* the episodes kept for later: still running (``carry_over``), or ended but waiting for the rest of their group;
* the discarded ones (abandoned, in a dropped group, or whose start was never stored).

An episode still running after ``max_episode_steps`` steps raises an error that names the time-limit wrapper to use.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer

__all__ = ["EpisodeBatch", "EpisodeBuffer", "episode_minibatches"]

ObsArray = np.ndarray | dict[str, np.ndarray]
TensorObs = th.Tensor | dict[str, th.Tensor]


class EpisodeBatch(NamedTuple):
    """Flat steps of whole episodes, episode after episode, in time order (all tensors ``[S]`` or ``[S, ...]``)."""

    observations: TensorObs
    actions: th.Tensor
    old_log_prob: th.Tensor
    rewards: th.Tensor
    terminated: th.Tensor  # bool
    truncated: th.Tensor  # bool
    next_values: th.Tensor  # V(final observation) at truncated steps, 0 elsewhere
    episode: th.Tensor  # int64 episode id
    group: th.Tensor  # int64 group id (-1 without groups)
    lengths: th.Tensor  # [E] episode lengths, in order

    @property
    def num_steps(self) -> int:
        return int(self.rewards.numel())

    def take(self, index: th.Tensor | slice) -> EpisodeBatch:
        """The steps ``index`` of every per-step field (``lengths`` is left as is: only meaningful for whole episodes)."""
        obs = (
            {k: v[index] for k, v in self.observations.items()}
            if isinstance(self.observations, dict)
            else self.observations[index]
        )
        fields = [f[index] for f in self[1:-1]]
        return EpisodeBatch(obs, *fields, self.lengths)  # type: ignore[arg-type]


def episode_minibatches(lengths: th.Tensor, batch_size: int | None, generator: th.Generator | None = None) -> list[th.Tensor]:
    """Shuffle whole episodes into mini-batches of about ``batch_size`` steps; returns the step indices of each.

    A mini-batch takes episodes until it holds at least ``batch_size`` steps; a last one smaller than
    ``batch_size / 2`` joins the previous one. ``None``: one mini-batch of every episode (in order).

    Example::

        >>> [b.tolist() for b in episode_minibatches(th.tensor([2, 1, 3]), None)]
        [[0, 1, 2, 3, 4, 5]]
    """
    n_ep = int(lengths.numel())
    offsets = th.cumsum(lengths, 0) - lengths
    if batch_size is None:
        groups = [th.arange(n_ep)]
    else:
        perm = th.randperm(n_ep, generator=generator)
        cumulative = th.cumsum(lengths[perm], 0).tolist()
        groups, first, filled = [], 0, 0
        for i, total in enumerate(cumulative):
            if total - filled >= batch_size:
                groups.append(perm[first : i + 1])
                first, filled = i + 1, total
        if first < n_ep:
            rest = perm[first:]
            if groups and cumulative[-1] - filled < batch_size / 2:
                groups[-1] = th.cat([groups[-1], rest])
            else:
                groups.append(rest)
    out = []
    for episodes in groups:
        ep_len = lengths[episodes]
        local = th.repeat_interleave(th.arange(episodes.numel()), ep_len)
        position = th.arange(int(ep_len.sum())) - (th.cumsum(ep_len, 0) - ep_len)[local]
        out.append(offsets[episodes][local] + position)
    return out


class EpisodeBuffer(BaseBuffer):
    """Rollout storage that yields whole episodes (see the module docstring).

    :param buffer_size: steps per env per rollout (``n_steps``).
    :param observation_space: observation space (``Dict`` supported).
    :param action_space: action space.
    :param device: torch device of the batches.
    :param n_envs: number of envs.
    :param carry_over: keep running episodes for the next rollout (``False``: drop them; their later steps are
        discarded too, so that only episodes collected within one rollout are used).
    :param max_episode_steps: error when an episode has run this many steps without ending.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        carry_over: bool = True,
        max_episode_steps: int = 100_000,
    ) -> None:
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.carry_over = carry_over
        self.max_episode_steps = max_episode_steps
        self._pending: dict[str, ObsArray] | None = None  # flat kept steps, episode by episode
        self._headless: set[int] = set()  # episodes whose start was dropped (carry_over=False)
        self.reset()

    def _obs_zeros(self) -> ObsArray:
        shape = (self.buffer_size, self.n_envs)
        if isinstance(self.observation_space, spaces.Dict):
            assert isinstance(self.obs_shape, dict)
            return {k: np.zeros((*shape, *s), dtype=self.observation_space[k].dtype) for k, s in self.obs_shape.items()}
        return np.zeros((*shape, *self.obs_shape), dtype=self.observation_space.dtype)  # type: ignore[misc]

    def reset(self) -> None:
        """Start a new rollout (the kept episodes stay)."""
        shape = (self.buffer_size, self.n_envs)
        self.observations = self._obs_zeros()
        self.actions = np.zeros((*shape, self.action_dim), dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminated = np.zeros(shape, dtype=bool)
        self.truncated = np.zeros(shape, dtype=bool)
        self.log_probs = np.zeros(shape, dtype=np.float32)
        self.next_values = np.zeros(shape, dtype=np.float32)
        self.episode = np.full(shape, -1, dtype=np.int64)
        self.group = np.full(shape, -1, dtype=np.int64)
        super().reset()

    def clear(self) -> None:
        """Forget every kept episode (the env was reset under them)."""
        self._pending = None
        self._headless.clear()

    def add(
        self,
        obs: ObsArray,
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        log_prob: th.Tensor,
        episode: np.ndarray,
        group: np.ndarray | None = None,
        next_value: np.ndarray | None = None,
    ) -> None:
        """Store one step of every env; ``episode[i] = -1`` marks a step that belongs to no episode (not stored)."""
        if self.pos >= self.buffer_size:
            raise RuntimeError(f"The rollout is full ({self.buffer_size} steps per env): call reset() first.")
        row = self.pos
        if isinstance(self.observations, dict):
            assert isinstance(obs, dict) and isinstance(self.obs_shape, dict)
            for key, arr in self.observations.items():
                arr[row] = np.asarray(obs[key]).reshape((self.n_envs, *self.obs_shape[key]))
        else:
            self.observations[row] = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))  # type: ignore[misc]
        self.actions[row] = np.asarray(action).reshape((self.n_envs, self.action_dim))
        self.rewards[row] = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        term = np.asarray(terminated, dtype=bool).reshape(self.n_envs)
        self.terminated[row] = term
        self.truncated[row] = np.asarray(truncated, dtype=bool).reshape(self.n_envs) & ~term
        self.log_probs[row] = log_prob.detach().cpu().numpy().reshape(self.n_envs)
        self.episode[row] = episode
        if group is not None:
            self.group[row] = group
        if next_value is not None:
            self.next_values[row] = next_value
        self.pos += 1
        self.full = self.pos == self.buffer_size

    def _steps(self) -> dict[str, ObsArray]:
        """This rollout's stored steps, flat in time order."""
        valid = self.episode[: self.pos] >= 0
        steps: dict[str, ObsArray] = {}
        if isinstance(self.observations, dict):
            steps["observations"] = {k: v[: self.pos][valid] for k, v in self.observations.items()}
        else:
            steps["observations"] = self.observations[: self.pos][valid]
        for name in ("actions", "log_probs", "rewards", "terminated", "truncated", "next_values", "episode", "group"):
            steps[name] = getattr(self, name)[: self.pos][valid]
        return steps

    def finalize(self, ready: Iterable[int] | None = None, discard: Iterable[int] = ()) -> EpisodeBatch | None:
        """Close the rollout: return the ready episodes (``None`` if there is none) and keep the others.

        :param ready: episode ids that may be trained on once ended (``None``: every ended episode).
        :param discard: episode ids whose steps are thrown away (kept or new).
        """
        steps = self._steps()
        if self._pending is not None:
            steps = _concat(self._pending, steps)
        episode = steps["episode"]
        assert isinstance(episode, np.ndarray)
        order = np.argsort(episode, kind="stable")  # episodes contiguous, each in time order (kept steps come first)
        steps = _take(steps, order)
        episode = steps["episode"]
        assert isinstance(episode, np.ndarray)
        if episode.size == 0:
            self._pending = None
            return None
        first = np.r_[True, episode[1:] != episode[:-1]]
        starts = np.flatnonzero(first)
        lengths = np.diff(np.r_[starts, episode.size])
        ids = episode[starts]
        last = starts + lengths - 1
        ended = (steps["terminated"][last] | steps["truncated"][last]).astype(bool)  # type: ignore[index]
        drop = np.isin(ids, np.fromiter(set(discard) | self._headless, dtype=np.int64))
        is_ready = ended & ~drop
        if ready is not None:
            is_ready &= np.isin(ids, np.fromiter(ready, dtype=np.int64))
        keep = ~drop & ~is_ready
        if not self.carry_over:
            cut = keep & ~ended
            self._headless |= set(ids[cut].tolist())
            keep &= ~cut
        self._headless -= set(ids[ended].tolist())
        too_long = keep & ~ended & (lengths >= self.max_episode_steps)
        if too_long.any():
            raise RuntimeError(
                f"An episode has run for {int(lengths[too_long].max())} steps without ending (max_episode_steps="
                f"{self.max_episode_steps}). These algorithms need complete episodes: wrap the env in a time limit "
                "(gymnasium.wrappers.TimeLimit, gym.make(..., max_episode_steps=...)) or raise max_episode_steps."
            )
        per_step = np.repeat(np.arange(ids.size), lengths)
        kept = _take(steps, keep[per_step])
        self._pending = kept if kept["episode"].size else None  # type: ignore[union-attr]
        if not is_ready.any():
            return None
        batch = _take(steps, is_ready[per_step])
        return self._to_batch(batch, lengths[is_ready])

    @property
    def num_pending_steps(self) -> int:
        """Steps kept for later rollouts."""
        return 0 if self._pending is None else int(self._pending["episode"].size)  # type: ignore[union-attr]

    def _to_batch(self, steps: dict[str, ObsArray], lengths: np.ndarray) -> EpisodeBatch:
        obs = steps["observations"]
        observations = {k: self.to_torch(v) for k, v in obs.items()} if isinstance(obs, dict) else self.to_torch(obs)
        tensors = {k: th.as_tensor(steps[k], device=self.device) for k in ("terminated", "truncated", "episode", "group")}
        return EpisodeBatch(
            observations=observations,
            actions=self.to_torch(steps["actions"]),  # type: ignore[arg-type]
            old_log_prob=self.to_torch(steps["log_probs"]),  # type: ignore[arg-type]
            rewards=self.to_torch(steps["rewards"]),  # type: ignore[arg-type]
            terminated=tensors["terminated"],
            truncated=tensors["truncated"],
            next_values=self.to_torch(steps["next_values"]),  # type: ignore[arg-type]
            episode=tensors["episode"],
            group=tensors["group"],
            lengths=th.as_tensor(lengths, device=self.device),
        )

    # SB3's BaseBuffer API: this buffer is read through finalize()
    def _get_samples(self, batch_inds: np.ndarray, env=None):  # type: ignore[no-untyped-def]
        raise NotImplementedError("EpisodeBuffer yields whole episodes through finalize().")

    def get(self, batch_size: int | None = None) -> Iterator[EpisodeBatch]:  # pragma: no cover - not used
        raise NotImplementedError("EpisodeBuffer yields whole episodes through finalize().")


def _concat(a: dict[str, ObsArray], b: dict[str, ObsArray]) -> dict[str, ObsArray]:
    out: dict[str, ObsArray] = {}
    for key, value in a.items():
        other = b[key]
        if isinstance(value, dict):
            assert isinstance(other, dict)
            out[key] = {k: np.concatenate([v, other[k]]) for k, v in value.items()}
        else:
            out[key] = np.concatenate([value, other])  # type: ignore[list-item]
    return out


def _take(steps: dict[str, ObsArray], index: np.ndarray) -> dict[str, ObsArray]:
    return {k: ({kk: vv[index] for kk, vv in v.items()} if isinstance(v, dict) else v[index]) for k, v in steps.items()}
