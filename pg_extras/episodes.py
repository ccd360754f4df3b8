"""Convert time-major rollouts ``[T, N]`` to padded episode layout ``[E, L]`` and back.

Group-relative advantages and the loss aggregation modes work per episode; on-policy buffers
(SB3's ``RolloutBuffer``, a TorchRL collector batch) store steps time-major. :class:`EpisodeLayout`
computes the index maps once (vectorised, no loop over steps) and moves tensors between the two layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["EpisodeLayout"]


@dataclass
class EpisodeLayout:
    """Index maps between a time-major rollout ``[T, N]`` and padded episodes ``[E, L]``.

    Episodes are ordered env by env, then by time. An episode ends at a step with ``done`` or at the
    rollout's last step; ``complete[e]`` tells whether it ended with ``done`` inside the rollout.

    Example::

        >>> done = torch.tensor([[False, True], [True, False], [False, False]])  # T=3, N=2
        >>> layout = EpisodeLayout.from_dones(done)
        >>> layout.lengths.tolist(), layout.complete.tolist()
        ([2, 1, 1, 2], [True, False, True, False])
        >>> layout.to_episodes(torch.arange(6.0).reshape(3, 2))
        tensor([[0., 2.],
                [4., 0.],
                [1., 0.],
                [3., 5.]])
    """

    episode_index: torch.Tensor  # [T, N] episode of each step
    position: torch.Tensor  # [T, N] position of each step inside its episode
    lengths: torch.Tensor  # [E]
    complete: torch.Tensor  # [E] bool
    env_index: torch.Tensor  # [E] env (column) of each episode
    start_step: torch.Tensor  # [E] time index of each episode's first step
    mask: torch.Tensor  # [E, L] bool, valid steps

    @classmethod
    def from_dones(cls, done: torch.Tensor) -> EpisodeLayout:
        """Build the layout from ``done = terminated | truncated`` of shape ``[T, N]`` (or ``[T]``)."""
        if done.dim() == 1:
            done = done[:, None]
        if done.dim() != 2:
            raise ValueError(f"done must have shape [T, N] or [T], got {tuple(done.shape)}.")
        done = done.to(torch.bool)
        T, N = done.shape
        dev = done.device
        if T == 0 or N == 0:  # an empty batch: no episode
            none = torch.zeros(0, dtype=torch.int64, device=dev)
            return cls(
                episode_index=torch.zeros(T, N, dtype=torch.int64, device=dev),
                position=torch.zeros(T, N, dtype=torch.int64, device=dev),
                lengths=none,
                complete=torch.zeros(0, dtype=torch.bool, device=dev),
                env_index=none,
                start_step=none,
                mask=torch.zeros(0, 0, dtype=torch.bool, device=dev),
            )
        d_env = done.t()  # [N, T]
        start = torch.zeros_like(d_env)
        start[:, 0] = True
        start[:, 1:] = d_env[:, :-1]
        flat_start = start.reshape(-1)
        ep = torch.cumsum(flat_start.to(torch.int64), 0) - 1  # [N*T]
        start_pos = torch.nonzero(flat_start).squeeze(1)  # [E]
        pos = torch.arange(N * T, device=dev) - start_pos[ep]
        lengths = torch.bincount(ep, minlength=start_pos.numel())
        end_pos = start_pos + lengths - 1
        complete = d_env.reshape(-1)[end_pos]
        L = int(lengths.max())
        mask = torch.arange(L, device=dev)[None, :] < lengths[:, None]
        return cls(
            episode_index=ep.reshape(N, T).t(),
            position=pos.reshape(N, T).t(),
            lengths=lengths,
            complete=complete,
            env_index=start_pos // T,
            start_step=start_pos % T,
            mask=mask,
        )

    @property
    def num_episodes(self) -> int:
        """Number of episodes ``E``."""
        return int(self.lengths.numel())

    @property
    def max_length(self) -> int:
        """Padded length ``L``."""
        return int(self.mask.shape[1])

    def to_episodes(self, x: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``[T, N, *F]`` -> ``[E, L, *F]``, padding with ``fill``."""
        if x.shape[:2] != self.episode_index.shape:
            raise ValueError(f"x must have leading shape {tuple(self.episode_index.shape)} ([T, N]), got {tuple(x.shape)}.")
        out = x.new_full((self.num_episodes, self.max_length, *x.shape[2:]), fill)
        out[self.episode_index, self.position] = x
        return out

    def to_steps(self, y: torch.Tensor) -> torch.Tensor:
        """``[E, L, *F]`` -> ``[T, N, *F]`` (padding dropped)."""
        return y[self.episode_index, self.position]

    def step_mask(self, episodes: torch.Tensor) -> torch.Tensor:
        """Bool ``[T, N]``: steps that belong to the selected episodes (``episodes``: bool ``[E]``)."""
        return episodes[self.episode_index]
