"""Batches of complete GRPO groups from a TorchRL collector.

``Collector(..., trajs_per_batch=M)`` yields complete trajectories in the order they finish, so the members of a
group (:class:`~torchrl_pg_extras.GroupReset`) can be split over two batches. :class:`GroupBatcher` holds the
finished members back until their whole group is done and yields padded batches made of whole groups only.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator

import torch
from tensordict import TensorDictBase, pad
from tensordict.utils import NestedKey

__all__ = ["GroupBatcher"]


class GroupBatcher:
    """Iterate over a trajectory collector and yield batches of ``groups_per_batch`` complete groups.

    Args:
        collector (iterable of TensorDict): a collector built with ``trajs_per_batch`` (any ``traj_format``)
            on an env carrying :class:`~torchrl_pg_extras.GroupReset`, or any iterable of such batches.
        group_size (int): episodes per group (the transform's ``group_size``).
        groups_per_batch (int): groups per yielded batch.

    Keyword Args:
        group_id_key (NestedKey): the group label. Defaults to ``"group_id"``.
        mask_key (NestedKey): the validity mask of padded batches (input and output).
            Defaults to ``("collector", "mask")``.
        traj_id_key (NestedKey): trajectory ids of concatenated (``traj_format="cat"``) batches.
            Defaults to ``("collector", "traj_ids")``.
        done_key (NestedKey): the end-of-episode flag. Defaults to ``("next", "done")``.
        max_pending_groups (int): groups waiting for members beyond this number are dropped, oldest first, with a
            warning (a member can be lost when the collector resets its envs). Defaults to ``4096``.

    Yields:
        TensorDict of batch size ``[groups_per_batch * group_size, L]``, the members of each group in consecutive
        rows, zero-padded along time, with ``mask_key`` marking the valid steps.

    Examples:
        >>> from torchrl.collectors import Collector
        >>> from torchrl.envs import GymEnv, SerialEnv, TransformedEnv
        >>> from torchrl_pg_extras import GroupBatcher, GroupReset
        >>> env = TransformedEnv(SerialEnv(4, lambda: GymEnv("CartPole-v1")), GroupReset(group_size=2, seed=0))
        >>> collector = Collector(env, None, frames_per_batch=64, trajs_per_batch=4, traj_format="padded",
        ...                       auto_register_policy_transforms=False)
        >>> batch = next(iter(GroupBatcher(collector, group_size=2, groups_per_batch=3)))
        >>> batch.shape[0], bool((batch["group_id"][0::2, 0] == batch["group_id"][1::2, 0]).all())
        (6, True)
        >>> collector.shutdown()
    """

    def __init__(
        self,
        collector: Iterable[TensorDictBase],
        group_size: int,
        groups_per_batch: int,
        *,
        group_id_key: NestedKey = "group_id",
        mask_key: NestedKey = ("collector", "mask"),
        traj_id_key: NestedKey = ("collector", "traj_ids"),
        done_key: NestedKey = ("next", "done"),
        max_pending_groups: int = 4096,
    ) -> None:
        for name, value in (
            ("group_size", group_size),
            ("groups_per_batch", groups_per_batch),
            ("max_pending_groups", max_pending_groups),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.collector = collector
        self.group_size = group_size
        self.groups_per_batch = groups_per_batch
        self.group_id_key = group_id_key
        self.mask_key = mask_key
        self.traj_id_key = traj_id_key
        self.done_key = done_key
        self.max_pending_groups = max_pending_groups
        self._pending: OrderedDict[int, list[TensorDictBase]] = OrderedDict()
        self._ready: list[list[TensorDictBase]] = []
        self.dropped_groups = 0

    def __getattr__(self, name: str):
        # delegate collector methods (shutdown, update_policy_weights_, set_seed, ...)
        if name == "collector":
            raise AttributeError(name)
        return getattr(self.collector, name)

    def _split(self, batch: TensorDictBase) -> list[TensorDictBase]:
        if batch.batch_dims == 2:
            mask = batch.get(self.mask_key, default=None)
            if mask is None:
                raise ValueError(
                    f"GroupBatcher got a 2-D batch without the mask {self.mask_key!r}: build the collector with "
                    "trajs_per_batch=... (padded trajectories)."
                )
            lengths = mask.reshape(batch.shape).sum(-1).tolist()
            return [batch[i, :n].clone() for i, n in enumerate(lengths) if n > 0]
        if batch.batch_dims == 1:
            ids = batch.get(self.traj_id_key, default=None)
            if ids is None:
                raise ValueError(f"GroupBatcher got a flat batch without {self.traj_id_key!r}: use trajs_per_batch=....")
            _, counts = torch.unique_consecutive(ids.reshape(-1), return_counts=True)
            return [t.clone() for t in batch.split(counts.tolist(), 0)]
        raise ValueError(f"GroupBatcher expects trajectory batches [E, L] or [sum T_i], got batch size {tuple(batch.shape)}.")

    def add(self, trajectory: TensorDictBase) -> None:
        """Add one complete trajectory ``[T_i]``."""
        done = trajectory.get(self.done_key, default=None)
        if done is not None and not bool(done.reshape(trajectory.shape[0], -1)[-1].any()):
            raise ValueError("GroupBatcher received a trajectory that does not end with done: use trajs_per_batch=....")
        gid_entry = trajectory.get(self.group_id_key, default=None)
        if gid_entry is None:
            raise KeyError(f"GroupBatcher: no {self.group_id_key!r} entry: add the GroupReset transform to the env.")
        gid = int(gid_entry.reshape(trajectory.shape[0], -1)[0, 0])
        members = self._pending.setdefault(gid, [])
        members.append(trajectory)
        if len(members) == self.group_size:
            self._ready.append(self._pending.pop(gid))
        while len(self._pending) > self.max_pending_groups:
            self._pending.popitem(last=False)
            self.dropped_groups += 1
            warnings.warn("GroupBatcher dropped an incomplete group (too many pending groups).", stacklevel=2)

    def _emit(self) -> TensorDictBase:
        groups = self._ready[: self.groups_per_batch]
        del self._ready[: self.groups_per_batch]
        trajs = [t for group in groups for t in group]
        max_len = max(t.shape[0] for t in trajs)
        padded = []
        for t in trajs:
            t = t.exclude(self.mask_key) if t.get(self.mask_key, default=None) is not None else t
            t.set(self.mask_key, torch.ones(t.shape[0], dtype=torch.bool, device=t.device))
            padded.append(pad(t, [0, max_len - t.shape[0]]) if t.shape[0] < max_len else t)
        return torch.stack(padded, 0)

    @property
    def num_pending(self) -> int:
        """Trajectories waiting for the rest of their group."""
        return sum(len(v) for v in self._pending.values())

    def __iter__(self) -> Iterator[TensorDictBase]:
        for batch in self.collector:
            if batch is None:
                continue
            for traj in self._split(batch):
                self.add(traj)
            while len(self._ready) >= self.groups_per_batch:
                yield self._emit()
