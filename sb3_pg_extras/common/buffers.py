"""A rollout buffer that hands out complete episodes only (REINFORCE, seed 2.1 / 2.3; reusable by GRPO-style algorithms).

SB3's ``RolloutBuffer`` scores every step, bootstrapping the episodes cut by the rollout boundary with ``V(s_T)``.
A Monte-Carlo method has no such value: a step may only be trained on once the return-to-go ``G_t`` of its episode is
known, i.e. once the episode has *ended*, and the episode's *start* must have been seen too (otherwise it is an episode
we joined half-way, e.g. after ``load``). :class:`EpisodicRolloutBuffer` therefore

* keeps, per env, the unfinished tail of the last rollout and prepends it to the next rollout (``carry_over=True``), or
  drops it (``carry_over=False``: strictly on-policy, at the price of the dropped steps);
* computes ``G_t`` with the core's :func:`pg_extras.returns_to_go` (terminated vs truncated respected; optional
  bootstrap of truncated episodes with stored ``V(s_final)``) and yields only the steps of episodes whose start and
  end both lie in the buffer (:attr:`usable`).

Layout: time-major ``[rows, n_envs, ...]`` with ``rows = carried + buffer_size``. The carried tails are
left-padded (column ``i`` holds its ``c_i`` carried steps in the last ``c_i`` of the first ``carried`` rows), so
all of a column's valid steps are contiguous and end at the last row; :attr:`valid` marks real steps.

Example::

    >>> import numpy as np
    >>> from gymnasium import spaces
    >>> buf = EpisodicRolloutBuffer(3, spaces.Box(-1, 1, (2,)), spaces.Discrete(2), gamma=1.0, n_envs=1)
    >>> buf.reset(episode_starts=np.array([True]))
    >>> for done in (False, True, False):  # an episode of 2 steps, then one step of the next episode
    ...     buf.add(np.zeros((1, 2)), np.array([0]), np.array([1.0]), np.array([done]), np.array([False]), np.zeros(1))
    >>> buf.compute_returns()
    >>> buf.returns[buf.usable].tolist(), int(buf.usable.sum()), buf.n_episodes
    ([2.0, 1.0], 2, 1)
    >>> buf.reset(episode_starts=np.array([False]))  # the unfinished step is carried into the next rollout
    >>> buf.carried_steps
    1
"""

from __future__ import annotations

from collections.abc import Generator
from typing import NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer

from pg_extras import complete_episode_mask, returns_to_go

__all__ = ["EpisodicRolloutBuffer", "EpisodicRolloutBufferSamples"]

ObsArray = np.ndarray | dict[str, np.ndarray]


class EpisodicRolloutBufferSamples(NamedTuple):
    """Flat usable steps (episode by episode, in time order unless shuffled)."""

    observations: th.Tensor | dict[str, th.Tensor]
    actions: th.Tensor
    old_log_prob: th.Tensor
    returns: th.Tensor
    episode_starts: th.Tensor  # 1.0 at the first step of each episode


class EpisodicRolloutBuffer(BaseBuffer):
    """On-policy buffer of ``buffer_size`` steps per env that yields complete episodes only.

    :param buffer_size: steps collected per env per rollout (``n_steps``).
    :param observation_space: observation space (``Dict`` supported).
    :param action_space: action space.
    :param device: torch device of the samples.
    :param gamma: discount of the returns-to-go.
    :param n_envs: number of parallel envs.
    :param carry_over: keep the unfinished episode tails for the next rollout (else drop them).
    :param max_carry_steps: error when an env's unfinished episode grows beyond this many steps (protects memory
        against environments that never end an episode).
    """

    observations: ObsArray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    log_probs: np.ndarray
    next_values: np.ndarray
    valid: np.ndarray
    returns: np.ndarray
    usable: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gamma: float = 0.99,
        n_envs: int = 1,
        carry_over: bool = True,
        max_carry_steps: int | None = None,
    ) -> None:
        if not isinstance(buffer_size, (int, np.integer)) or buffer_size < 1:
            raise ValueError(f"buffer_size (n_steps) must be a positive integer, got {buffer_size!r}.")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.gamma = gamma
        self.carry_over = carry_over
        self.max_carry_steps = max_carry_steps
        self.carried = 0  # number of carried rows at the top of the storage
        self.head_known = np.ones(n_envs, dtype=bool)
        self._keep_tails = True
        self._allocate(0)

    # ------------------------------------------------------------------ storage
    def _obs_zeros(self, rows: int) -> ObsArray:
        if isinstance(self.observation_space, spaces.Dict):
            assert isinstance(self.obs_shape, dict)
            return {
                key: np.zeros((rows, self.n_envs, *shape), dtype=self.observation_space[key].dtype)
                for key, shape in self.obs_shape.items()
            }
        return np.zeros((rows, self.n_envs, *self.obs_shape), dtype=self.observation_space.dtype)

    def _fields(self) -> dict[str, np.ndarray]:
        """All per-step arrays except the observations."""
        return {
            "actions": self.actions,
            "rewards": self.rewards,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "log_probs": self.log_probs,
            "next_values": self.next_values,
            "valid": self.valid,
        }

    def _allocate(self, carried: int) -> None:
        rows = carried + self.buffer_size
        self.observations = self._obs_zeros(rows)
        self.actions = np.zeros((rows, self.n_envs, self.action_dim), dtype=self.action_space.dtype)
        self.rewards = np.zeros((rows, self.n_envs), dtype=np.float32)
        self.terminated = np.zeros((rows, self.n_envs), dtype=bool)
        self.truncated = np.zeros((rows, self.n_envs), dtype=bool)
        self.log_probs = np.zeros((rows, self.n_envs), dtype=np.float32)
        self.next_values = np.zeros((rows, self.n_envs), dtype=np.float32)
        self.valid = np.zeros((rows, self.n_envs), dtype=bool)
        self.valid[carried:] = True
        self.returns = np.zeros((rows, self.n_envs), dtype=np.float32)
        self.usable = np.zeros((rows, self.n_envs), dtype=bool)
        self.carried = carried

    @property
    def rows(self) -> int:
        """Filled rows (carried rows plus the steps added in this rollout)."""
        return self.carried + self.pos

    @property
    def carried_steps(self) -> int:
        """Number of real steps carried over from earlier rollouts."""
        return int(self.valid[: self.carried].sum())

    def tail_lengths(self) -> np.ndarray:
        """``[n_envs]`` length of each env's unfinished episode at the end of the filled rows (0 if unknown start)."""
        rows = self.rows
        if rows == 0:
            return np.zeros(self.n_envs, dtype=np.int64)
        done = (self.terminated[:rows] | self.truncated[:rows]) & self.valid[:rows]
        valid_len = self.valid[:rows].sum(0)
        any_done = done.any(0)
        # last done row per column (rows - 1 - argmax over the reversed column)
        last_done = rows - 1 - np.argmax(done[::-1], axis=0)
        tail = np.where(any_done, rows - 1 - last_done, valid_len)
        # An unfinished episode whose start was never seen cannot become complete: not carried.
        return np.where(any_done | self.head_known, tail, 0)

    # ------------------------------------------------------------------ rollout API
    def reset(self, episode_starts: np.ndarray | None = None) -> None:
        """Start a new rollout.

        :param episode_starts: ``[n_envs]`` bool, true where the env's next step starts a new episode
            (SB3's ``_last_episode_starts``). Where false, the env continues the episode whose tail was kept
            (``carry_over``); without a kept tail the episode's start is unknown and its steps will not be used.
            ``None``: all envs start afresh (every kept tail is dropped).
        """
        starts = np.ones(self.n_envs, dtype=bool) if episode_starts is None else np.asarray(episode_starts, dtype=bool)
        if starts.shape != (self.n_envs,):
            raise ValueError(f"episode_starts must have shape ({self.n_envs},), got {starts.shape}.")
        keep = self.carry_over and self._keep_tails
        tails = self.tail_lengths() if keep else np.zeros(self.n_envs, dtype=np.int64)
        tails = np.where(starts, 0, tails)  # a new episode starts: nothing to continue
        carried = int(tails.max()) if tails.size else 0
        if self.max_carry_steps is not None and carried > self.max_carry_steps:
            env = int(tails.argmax())
            raise RuntimeError(
                f"The episode of env {env} has run for {carried} steps without ending (max_carry_steps="
                f"{self.max_carry_steps}). Monte-Carlo returns need complete episodes: wrap the env in a time limit "
                "(gymnasium.wrappers.TimeLimit / max_episode_steps=...), or raise max_carry_steps / n_steps."
            )
        old_obs, old_fields, old_rows = self.observations, self._fields(), self.rows
        self._allocate(carried)
        if carried:
            src = slice(old_rows - carried, old_rows)
            if isinstance(old_obs, dict):
                assert isinstance(self.observations, dict)
                for key in old_obs:
                    self.observations[key][:carried] = old_obs[key][src]
            else:
                assert isinstance(self.observations, np.ndarray)
                self.observations[:carried] = old_obs[src]
            for name, new in self._fields().items():
                if name != "valid":
                    new[:carried] = old_fields[name][src]
            self.valid[:carried] = np.arange(carried)[:, None] >= (carried - tails)[None, :]
        self.head_known = starts | (tails > 0)
        self._keep_tails = True
        super().reset()

    def drop_tails(self) -> None:
        """Forget every unfinished episode (e.g. after an interrupted rollout): the next :meth:`reset` carries nothing."""
        self._keep_tails = False

    def add(
        self,
        obs: ObsArray,
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        log_prob: th.Tensor | np.ndarray,
        next_value: th.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add one step of every env.

        :param obs: observations ``o_t`` (``[n_envs, *obs_shape]`` or a dict of them).
        :param action: actions taken (unclipped, as sampled).
        :param reward: ``r_t``.
        :param terminated: true terminal transitions.
        :param truncated: time-limit ends (not terminated).
        :param log_prob: ``log pi(a_t|s_t)`` at collection time.
        :param next_value: ``V`` of the final observation where ``truncated`` (used by ``compute_returns(bootstrap=True)``).
        """
        if self.pos >= self.buffer_size:
            raise RuntimeError(f"The rollout is full ({self.buffer_size} steps per env): call reset() first.")
        row = self.carried + self.pos
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
        self.log_probs[row] = _to_numpy(log_prob).reshape(self.n_envs)
        if next_value is not None:
            self.next_values[row] = _to_numpy(next_value).reshape(self.n_envs)
        self.pos += 1
        self.full = self.pos == self.buffer_size

    def compute_returns(self, bootstrap_truncated: bool = False) -> None:
        """Fill :attr:`returns` (``G_t``, :func:`pg_extras.returns_to_go`) and :attr:`usable` for the filled rows.

        :param bootstrap_truncated: add ``gamma * next_values`` at truncated steps (needs a critic); otherwise a
            truncated episode's return is the plain sum of its rewards.
        """
        rows = self.rows
        done = (self.terminated[:rows] | self.truncated[:rows]) & self.valid[:rows]
        rewards = th.as_tensor(self.rewards[:rows])
        terminated = th.as_tensor(self.terminated[:rows] & self.valid[:rows])
        truncated = th.as_tensor(self.truncated[:rows] & self.valid[:rows])
        next_values = None
        if bootstrap_truncated:
            # Only read at truncated steps (and at the last row, whose steps are never usable when not done).
            next_values = th.as_tensor(np.where(self.truncated[:rows], self.next_values[:rows], 0.0).astype(np.float32))
        g = returns_to_go(rewards, terminated, truncated, gamma=self.gamma, next_values=next_values)
        self.returns[:] = 0.0
        self.returns[:rows] = g.numpy()
        ended = complete_episode_mask(th.as_tensor(done)).numpy()
        dones_before = (np.cumsum(done, 0) - done) > 0
        started = self.head_known[None, :] | dones_before
        self.usable[:] = False
        self.usable[:rows] = self.valid[:rows] & ended & started

    @property
    def n_episodes(self) -> int:
        """Number of complete episodes among the usable steps."""
        rows = self.rows
        done = self.terminated[:rows] | self.truncated[:rows]
        return int((done & self.usable[:rows]).sum())

    @property
    def n_usable(self) -> int:
        """Number of usable steps."""
        return int(self.usable.sum())

    def usable_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, envs)`` of the usable steps, env by env then in time order (episodes are contiguous)."""
        env_idx, row_idx = np.nonzero(self.usable.T)
        return row_idx, env_idx

    def get(self, batch_size: int | None = None, shuffle: bool = False) -> Generator[EpisodicRolloutBufferSamples, None, None]:
        """Yield the usable steps in batches of ``batch_size`` (``None``: one batch with all of them).

        :param batch_size: steps per batch.
        :param shuffle: permute the steps (with numpy's global generator, like SB3) before batching.
        """
        rows, envs = self.usable_indices()
        n = rows.size
        if n == 0:
            return
        order = np.random.permutation(n) if shuffle else np.arange(n)
        batch_size = n if batch_size is None else batch_size
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self._get_samples_at(rows[idx], envs[idx])

    def _get_samples_at(self, rows: np.ndarray, envs: np.ndarray) -> EpisodicRolloutBufferSamples:
        if isinstance(self.observations, dict):
            obs: th.Tensor | dict[str, th.Tensor] = {k: self.to_torch(v[rows, envs]) for k, v in self.observations.items()}
        else:
            obs = self.to_torch(self.observations[rows, envs])
        done = self.terminated | self.truncated
        # First step of an episode: the row after a done, or the first valid row of a column (usable => start seen).
        first = (rows == self.first_valid_row()[envs]) | ((rows > 0) & done[np.maximum(rows - 1, 0), envs])
        return EpisodicRolloutBufferSamples(
            observations=obs,
            # float32 like SB3's rollout buffer (MultiBinary actions are int8 in the space)
            actions=self.to_torch(self.actions[rows, envs].astype(np.float32, copy=False)),
            old_log_prob=self.to_torch(self.log_probs[rows, envs]),
            returns=self.to_torch(self.returns[rows, envs]),
            episode_starts=self.to_torch(first.astype(np.float32)),
        )

    def first_valid_row(self) -> np.ndarray:
        """``[n_envs]`` first valid row of each column."""
        return np.argmax(self.valid, axis=0)

    def sample(self, batch_size: int, env=None) -> EpisodicRolloutBufferSamples:  # type: ignore[no-untyped-def]
        """``batch_size`` usable steps drawn uniformly with replacement (numpy's global generator)."""
        if self.n_usable == 0:
            raise RuntimeError("No usable step: no episode both started and ended in the buffer yet.")
        return self._get_samples(np.random.randint(0, self.n_usable, size=batch_size))

    def _get_samples(self, batch_inds: np.ndarray, env=None) -> EpisodicRolloutBufferSamples:  # type: ignore[no-untyped-def]
        """Samples at flat indices into the usable steps (order of :meth:`usable_indices`)."""
        rows, envs = self.usable_indices()
        return self._get_samples_at(rows[batch_inds], envs[batch_inds])


def _to_numpy(x: th.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, th.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
