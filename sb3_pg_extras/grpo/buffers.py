"""Rollout storage for GRPO: whole rounds of grouped episodes, group-relative advantages, episode mini-batches.

The buffer grows step by step (a rollout ends at a round end, so its length is not fixed), then
:meth:`GroupRolloutBuffer.compute_advantages` maps the time-major ``[T, N]`` steps to episodes with
:class:`pg_extras.EpisodeLayout`, drops the steps of envs that were waiting for their group, labels every
episode with its group (round, ``env // G``) and calls :func:`pg_extras.group_relative_advantages`.
:meth:`GroupRolloutBuffer.get` yields mini-batches made of *whole* episodes so that every
``loss_aggregation`` mode (:func:`pg_extras.aggregate_loss`) is exact on each mini-batch.

Example::

    >>> import numpy as np
    >>> from gymnasium import spaces
    >>> buf = GroupRolloutBuffer(spaces.Box(-1, 1, (1,)), spaces.Discrete(2), n_envs=2, group_size=2)
    >>> for t, done in enumerate([[True, False], [False, True]]):  # env 0: 1 step, env 1: 2 steps
    ...     buf.add(np.zeros((2, 1)), np.zeros(2, dtype=np.int64), np.ones(2), np.array([t == 0, True]),
    ...             np.array(done), np.zeros(2), round_end=t == 1)
    >>> stats = buf.compute_advantages(mode="outcome", scale="group", rloo=False, gamma=1.0)
    >>> buf.n_episodes, buf.lengths.tolist(), buf.advantages.tolist()
    (2, [1, 2], [-0.7071067690849304, 0.7071067690849304, 0.7071067690849304])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces

from pg_extras import EpisodeLayout, group_relative_advantages

__all__ = ["GroupBatch", "GroupRolloutBuffer", "GroupRolloutStats"]

TensorObs = th.Tensor | dict[str, th.Tensor]


@dataclass
class GroupRolloutStats:
    """Statistics of one rollout's advantage computation."""

    n_episodes: int
    n_groups: int
    n_active_steps: int
    n_env_steps: int
    frac_zero_std_groups: float
    group_return_std: float
    all_advantages_zero: bool

    @property
    def active_fraction(self) -> float:
        """Share of env steps that belong to a group episode (the others waited for their group)."""
        return self.n_active_steps / max(self.n_env_steps, 1)


@dataclass
class GroupBatch:
    """A mini-batch of whole episodes, as flat steps plus the map to the padded ``[E_mb, L_mb]`` layout."""

    observations: TensorObs  # [S, *obs_shape]
    actions: th.Tensor  # [S, *action_shape]
    old_log_prob: th.Tensor  # [S]
    advantages: th.Tensor  # [S]
    episode: th.Tensor  # [S] episode of each step, 0 .. n_episodes - 1
    position: th.Tensor  # [S] position of each step inside its episode
    mask: th.Tensor  # [E_mb, L_mb] bool

    @property
    def n_episodes(self) -> int:
        return int(self.mask.shape[0])

    def to_episodes(self, x: th.Tensor) -> th.Tensor:
        """Flat per-step ``[S]`` -> padded ``[E_mb, L_mb]`` (zeros on padding, differentiable)."""
        padded = x.new_zeros(self.mask.shape)
        return padded.index_put((self.episode, self.position), x)


class GroupRolloutBuffer:
    """Growing rollout buffer for GRPO (see the module docstring).

    :param observation_space: observation space.
    :param action_space: action space.
    :param n_envs: number of env columns ``N``.
    :param group_size: envs per group ``G`` (columns ``[kG, (k+1)G)`` form group ``k`` of each round).
    :param device: device of the training tensors.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        n_envs: int,
        group_size: int,
        device: th.device | str = "cpu",
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.n_envs = n_envs
        self.group_size = group_size
        self.n_groups_per_round = n_envs // group_size
        self.device = th.device(device)
        self.reset()

    def reset(self) -> None:
        """Empty the buffer."""
        self._obs: list[Any] = []
        self._actions: list[np.ndarray] = []
        self._rewards: list[np.ndarray] = []
        self._active: list[np.ndarray] = []
        self._dones: list[np.ndarray] = []
        self._log_probs: list[np.ndarray] = []
        self._round_end: list[bool] = []
        self.ready = False

    @property
    def size(self) -> int:
        """Number of stored time steps ``T`` (each holds ``N`` env steps)."""
        return len(self._rewards)

    def add(
        self,
        obs: np.ndarray | dict[str, np.ndarray],
        actions: np.ndarray,
        rewards: np.ndarray,
        active: np.ndarray,
        dones: np.ndarray,
        log_probs: np.ndarray | th.Tensor,
        round_end: bool,
    ) -> None:
        """Store one ``VecEnv`` step.

        :param obs: observation the action was taken in, ``[N, *obs_shape]`` (or a dict of those).
        :param actions: actions sampled by the policy (before clipping), ``[N, *action_shape]``.
        :param rewards: ``[N]`` rewards.
        :param active: ``[N]`` bool, the step belongs to the env's group episode (False: the env waits for its group).
        :param dones: ``[N]`` bool, the env's group episode ended at this step.
        :param log_probs: ``[N]`` log-probabilities of the actions under the behaviour policy.
        :param round_end: every env has finished: the next step starts a new round.
        """
        if isinstance(obs, dict):
            self._obs.append({k: np.array(v, copy=True) for k, v in obs.items()})
        else:
            self._obs.append(np.array(obs, copy=True))
        self._actions.append(np.array(actions, copy=True).reshape(self.n_envs, *self.action_space.shape))
        self._rewards.append(np.asarray(rewards, dtype=np.float32).reshape(self.n_envs).copy())
        self._active.append(np.asarray(active, dtype=bool).reshape(self.n_envs).copy())
        self._dones.append(np.asarray(dones, dtype=bool).reshape(self.n_envs).copy())
        if isinstance(log_probs, th.Tensor):
            log_probs = log_probs.detach().cpu().numpy()
        self._log_probs.append(np.asarray(log_probs, dtype=np.float32).reshape(self.n_envs).copy())
        self._round_end.append(bool(round_end))
        self.ready = False

    def _layout(self) -> tuple[EpisodeLayout, th.Tensor, th.Tensor]:
        """Episode layout of the stored steps, which episodes are group episodes, and the round of each time step."""
        if self.size == 0:
            raise RuntimeError("The rollout buffer is empty: collect a rollout first.")
        if not self._round_end[-1]:
            raise RuntimeError("A GRPO rollout must end at a round end (every group finished): collect whole rounds.")
        active = th.as_tensor(np.stack(self._active))
        dones = th.as_tensor(np.stack(self._dones))
        round_end = th.as_tensor(self._round_end)
        if bool((dones & ~active).any()):
            raise ValueError("dones must be False where active is False (a waiting env cannot end an episode).")
        # Segments end at an episode's done and at every round end (which also closes the waiting segments).
        layout = EpisodeLayout.from_dones(dones | round_end[:, None])
        group_episode = active[layout.start_step, layout.env_index]
        if not bool((layout.step_mask(group_episode) == active).all()):
            raise ValueError("Inactive steps inside an episode: an env becomes inactive only after its episode's done.")
        end_step = layout.start_step + layout.lengths - 1
        ended = dones[end_step, layout.env_index]
        if not bool(ended[group_episode].all()):
            raise ValueError("An active episode did not end with done before its round ended: mark its last step done.")
        r_int = round_end.to(th.int64)
        round_of_step = th.cumsum(r_int, 0) - r_int
        return layout, group_episode, round_of_step

    def compute_advantages(
        self, mode: str = "outcome", scale: str = "group", rloo: bool = False, gamma: float = 1.0
    ) -> GroupRolloutStats:
        """Group-relative advantages of every group episode (:func:`pg_extras.group_relative_advantages`).

        Prepares the flat, episode-major training tensors (only the steps of group episodes).
        """
        layout, group_episode, round_of_step = self._layout()
        idx = th.nonzero(group_episode).squeeze(1)
        start, env = layout.start_step[idx], layout.env_index[idx]
        lengths = layout.lengths[idx]
        group_ids = round_of_step[start] * self.n_groups_per_round + env // self.group_size
        rewards_steps = th.as_tensor(np.stack(self._rewards))
        ep_rewards = layout.to_episodes(rewards_steps)[idx]
        ep_mask = layout.mask[idx]
        result = group_relative_advantages(
            ep_rewards, ep_mask, group_ids=group_ids, mode=mode, scale=scale, rloo=rloo, gamma=gamma
        )

        # Flat steps, episode after episode: (episode e, position p) is time step start[e] + p of env column env[e].
        n_ep = int(idx.numel())
        step_episode = th.repeat_interleave(th.arange(n_ep), lengths)
        offsets = th.cumsum(lengths, 0) - lengths
        step_position = th.arange(int(lengths.sum())) - offsets[step_episode]
        t_idx = (start[step_episode] + step_position).numpy()
        n_idx = env[step_episode].numpy()

        def gather(rows: list[np.ndarray]) -> th.Tensor:
            return th.as_tensor(np.stack(rows)[t_idx, n_idx], device=self.device)

        if isinstance(self.observation_space, spaces.Dict):
            self.observations: TensorObs = {
                key: gather([o[key] for o in self._obs])
                for key in self.observation_space.spaces  # type: ignore[union-attr]
            }
        else:
            self.observations = gather(self._obs)
        actions = gather(self._actions)
        if isinstance(self.action_space, (spaces.Discrete, spaces.MultiDiscrete)):
            actions = actions.long()
        else:
            actions = actions.float()
        self.actions = actions
        self.old_log_prob = gather(self._log_probs)
        self.advantages = result.advantages[step_episode, step_position].to(self.device)
        self.lengths = lengths
        self.offsets = offsets
        self.episode_env = env
        self.episode_round = round_of_step[start]
        self.episode_group = group_ids
        self.episode_rewards = ep_rewards
        self.episode_mask = ep_mask
        self.ready = True
        return GroupRolloutStats(
            n_episodes=n_ep,
            n_groups=int(th.unique(group_ids).numel()),
            n_active_steps=int(lengths.sum()),
            n_env_steps=self.size * self.n_envs,
            frac_zero_std_groups=result.frac_zero_std_groups,
            group_return_std=result.group_return_std,
            all_advantages_zero=bool((result.advantages == 0).all()),
        )

    @property
    def n_episodes(self) -> int:
        """Number of group episodes in the rollout (after :meth:`compute_advantages`)."""
        return int(self.lengths.numel())

    @property
    def max_length(self) -> int:
        """Longest group episode of the rollout."""
        return int(self.lengths.max())

    def _minibatches(self, batch_size: int | None) -> list[th.Tensor]:
        """Shuffle the episodes (torch's global generator) and pack them into mini-batches of about ``batch_size`` steps.

        A mini-batch takes whole episodes until it holds at least ``batch_size`` steps; a last mini-batch smaller
        than ``batch_size / 2`` is merged into the previous one. ``None``: one mini-batch with every episode.
        """
        perm = th.randperm(self.n_episodes)
        if batch_size is None:
            return [perm]
        cumulative = th.cumsum(self.lengths[perm], 0).tolist()
        batches, first, filled = [], 0, 0
        for i, total in enumerate(cumulative):
            if total - filled >= batch_size:
                batches.append(perm[first : i + 1])
                first, filled = i + 1, total
        if first < len(cumulative):
            rest = perm[first:]
            if batches and cumulative[-1] - filled < batch_size / 2:
                batches[-1] = th.cat([batches[-1], rest])
            else:
                batches.append(rest)
        return batches

    def get(self, batch_size: int | None = None) -> Iterator[GroupBatch]:
        """Yield mini-batches of whole episodes in random order (see :meth:`_minibatches`)."""
        if not self.ready:
            raise RuntimeError("Call compute_advantages() before get().")
        for episodes in self._minibatches(batch_size):
            lengths = self.lengths[episodes]
            local = th.repeat_interleave(th.arange(episodes.numel()), lengths)
            position = th.arange(int(lengths.sum())) - (th.cumsum(lengths, 0) - lengths)[local]
            steps = (self.offsets[episodes][local] + position).to(self.device)
            if isinstance(self.observations, dict):
                obs: TensorObs = {key: value[steps] for key, value in self.observations.items()}
            else:
                obs = self.observations[steps]
            mask = th.arange(int(lengths.max()))[None, :] < lengths[:, None]
            yield GroupBatch(
                observations=obs,
                actions=self.actions[steps],
                old_log_prob=self.old_log_prob[steps],
                advantages=self.advantages[steps],
                episode=local.to(self.device),
                position=position.to(self.device),
                mask=mask.to(self.device),
            )
