"""Environment transform that turns the sub-envs of a batched env into GRPO groups (DESIGN.md "GRPO").

For control tasks a GRPO "query" is an initial state: a group is ``group_size`` episodes that start from the
same reset seed. :class:`GroupReset` splits the ``N`` sub-envs of a batched env into ``N / group_size`` slots
of consecutive sub-envs; the ``k``-th episode of every member of slot ``g`` is reset from the same seed, and
every step is labelled with a ``group_id`` that is unique for ``(slot, k)``.
"""

from __future__ import annotations

import os

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs import EnvBase, Transform
from torchrl.envs.batched_envs import BatchedEnvBase

__all__ = ["GroupReset"]

_SEED_MOD = 2**31 - 1


class GroupReset(Transform):
    """Reset groups of ``group_size`` consecutive sub-envs of a batched env from the same seed.

    Sub-envs ``[g * group_size, (g + 1) * group_size)`` form slot ``g``. Each sub-env counts the episodes it
    starts; the ``k``-th episode of every member of slot ``g`` is reset with the seed
    ``seed + k * num_slots + g``, so (for dynamics that are deterministic given the seed) all members of a
    group start from the same state, as a GRPO group must (DESIGN.md "GRPO"). The label ``group_id``
    (``int64``, shape ``[*batch, 1]``) of every step identifies ``(slot, k)``; a full reset starts a fresh
    round for every sub-env.

    Members of a group run independently and may finish at different times. To train on complete groups
    only, wrap the collector (built with ``trajs_per_batch``) in :class:`~torchrl_pg_extras.GroupBatcher`,
    which holds back the finished members until their whole group is done.

    The seed is passed to the sub-envs' ``reset`` through TorchRL's reset keyword arguments: for a
    :class:`~torchrl.envs.SerialEnv` / :class:`~torchrl.envs.ParallelEnv` via ``list_of_kwargs``
    (``reset(seed=...)`` of each :class:`~torchrl.envs.GymEnv`), for a gymnasium vector env wrapped with
    :class:`~torchrl.envs.GymWrapper` (``autoreset_mode=AutoresetMode.DISABLED``) as a list of seeds. The
    seeded reset is followed by the ordinary reset, whose state is drawn from the freshly seeded generator,
    so it is deterministic given the seed (one extra reset per finished episode). Environments that reset
    themselves inside ``step`` (``AutoresetMode.SAME_STEP``) are rejected.

    Args:
        group_size (int): number of episodes per group; must divide the env's batch size.

    Keyword Args:
        seed (int, optional): base seed. ``None`` (default) draws one from the OS at the first reset. The group ids
            carry a namespace (random, or derived from ``seed``) so that the ids of collector workers with
            different seeds never collide: pass different seeds to different workers.
        group_id_key (NestedKey, optional): where the group label is written. Defaults to ``"group_id"``.
        seed_kwarg (str, optional): name of the seed keyword of the sub-envs' ``reset``. Defaults to ``"seed"``.

    Examples:
        >>> import torch
        >>> from torchrl.envs import GymEnv, SerialEnv, TransformedEnv
        >>> from torchrl_pg_extras import GroupReset
        >>> env = TransformedEnv(SerialEnv(4, lambda: GymEnv("CartPole-v1")), GroupReset(group_size=2, seed=0))
        >>> td = env.reset()
        >>> td["group_id"].squeeze(-1).tolist()
        [0, 0, 1, 1]
        >>> obs = td["observation"]
        >>> torch.equal(obs[0], obs[1]), torch.equal(obs[0], obs[2])  # same group, other group
        (True, False)
    """

    invertible = False

    def __init__(
        self, group_size: int, *, seed: int | None = None, group_id_key: NestedKey = "group_id", seed_kwarg: str = "seed"
    ) -> None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")
        super().__init__(in_keys=[], out_keys=[group_id_key])
        self.group_size = group_size
        self.seed = seed
        self.group_id_key = group_id_key
        self.seed_kwarg = seed_kwarg
        self._rounds: torch.Tensor | None = None  # [N] episodes started by each sub-env (minus one)
        self._base_seed: int | None = None
        self._namespace: int = 0

    def set_container(self, container) -> None:
        super().set_container(container)
        # validate as soon as the transform is attached to an env (ValueError at construction)
        if self.parent is not None:
            self._num_envs()
            self._check_base_env()

    # -- geometry -----------------------------------------------------------------------------------
    def _num_envs(self) -> int:
        parent = self.parent
        if parent is None:
            raise RuntimeError("GroupReset must be appended to a TransformedEnv before use.")
        batch_size = parent.batch_size
        if len(batch_size) != 1:
            raise ValueError(
                f"GroupReset needs a batched env with a 1-D batch size [N], got {tuple(batch_size)}: "
                "use SerialEnv / ParallelEnv(N, ...) or a gymnasium vector env."
            )
        n = int(batch_size[0])
        if n % self.group_size != 0:
            raise ValueError(
                f"group_size={self.group_size} does not divide the number of sub-envs ({n}): "
                f"use a number of envs that is a multiple of group_size."
            )
        return n

    @property
    def num_slots(self) -> int:
        """Number of groups that run at the same time (``N / group_size``)."""
        return self._num_envs() // self.group_size

    def _check_base_env(self) -> EnvBase:
        base = self.parent.base_env
        mode = getattr(base.__dict__.get("_env", None), "autoreset_mode", None)  # gymnasium vector env
        self_resetting = mode is not None and getattr(mode, "name", str(mode)) != "DISABLED"
        if self_resetting or base.__dict__.get("_torchrl_native_autoreset", False):
            raise ValueError(
                "GroupReset cannot seed sub-envs that reset themselves inside step (native auto-reset, "
                "gymnasium AutoresetMode.SAME_STEP): use SerialEnv / ParallelEnv of GymEnv, or "
                "gym.make_vec(..., vector_kwargs={'autoreset_mode': AutoresetMode.DISABLED}) wrapped in GymWrapper."
            )
        return base

    def _lazy_init(self, n: int, device: torch.device | None) -> None:
        if self._rounds is None or self._rounds.numel() != n:
            self._rounds = torch.full((n,), -1, dtype=torch.int64)
        if self._base_seed is None:
            if self.seed is None:
                self._base_seed = int.from_bytes(os.urandom(4), "little") % _SEED_MOD
                self._namespace = int.from_bytes(os.urandom(4), "little") % (2**30)
            else:
                # ids of envs with different seeds (e.g. collector workers) never collide; equal seeds give equal
                # start states, so merging their groups is harmless
                self._base_seed = self.seed % _SEED_MOD
                self._namespace = self.seed % (2**30)

    def _slot_index(self, n: int) -> torch.Tensor:
        return torch.arange(n) // self.group_size

    def group_ids(self) -> torch.Tensor:
        """Current group label of every sub-env, ``[N]`` int64 (CPU)."""
        n = self._num_envs()
        if self._rounds is None:
            self._lazy_init(n, None)
        slots = n // self.group_size
        return self._namespace * 2**32 + self._rounds.clamp(min=0) * slots + self._slot_index(n)

    # -- reset --------------------------------------------------------------------------------------
    def _reset_env_preprocess(self, tensordict: TensorDictBase | None) -> TensorDictBase | None:
        n = self._num_envs()
        base = self._check_base_env()
        self._lazy_init(n, base.device)
        mask = None
        if tensordict is not None:
            for key in self.parent.reset_keys:
                m = tensordict.get(key, default=None)
                if m is not None:
                    m = m.reshape(n, -1).any(-1).cpu()
                    mask = m if mask is None else mask | m
        if mask is None or bool(mask.all()):
            # full reset: every sub-env starts a fresh, common round
            mask = torch.ones(n, dtype=torch.bool)
            self._rounds.fill_(int(self._rounds.max()) + 1)
        else:
            self._rounds[mask] += 1
        if bool(mask.any()):
            seeds = (self._base_seed + self._rounds * (n // self.group_size) + self._slot_index(n)) % _SEED_MOD
            self._seeded_reset(base, mask, seeds)
        return super()._reset_env_preprocess(tensordict)

    def _seeded_reset(self, base: EnvBase, mask: torch.Tensor, seeds: torch.Tensor) -> None:
        n = mask.numel()
        td = TensorDict({}, batch_size=[n], device=base.device)
        for key in base.reset_keys:
            td.set(key, mask.view(n, 1).to(base.device))
        seed_list = [int(s) for s in seeds.tolist()]
        try:
            if isinstance(base, BatchedEnvBase):
                base.reset(td, list_of_kwargs=[{self.seed_kwarg: s} for s in seed_list])
            else:
                base.reset(td, **{self.seed_kwarg: [s if m else None for s, m in zip(seed_list, mask.tolist(), strict=True)]})
        except TypeError as err:
            raise TypeError(
                f"GroupReset could not pass {self.seed_kwarg}=... to the reset of {type(base).__name__} ({err}). "
                "The sub-envs must accept a seed keyword in reset (GymEnv / GymWrapper do); "
                "set seed_kwarg to the right name."
            ) from err

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        ids = self.group_ids().view(-1, 1).to(tensordict_reset.device)
        tensordict_reset.set(self.group_id_key, ids)
        return tensordict_reset

    def _reset_on_native_autoreset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        self._check_base_env()
        return self._reset(tensordict, tensordict_reset)

    # -- step ---------------------------------------------------------------------------------------
    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        next_tensordict.set(self.group_id_key, self.group_ids().view(-1, 1).to(next_tensordict.device))
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    # -- specs --------------------------------------------------------------------------------------
    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        n = self._num_envs()
        observation_spec[self.group_id_key] = Unbounded(shape=(n, 1), dtype=torch.int64, device=observation_spec.device)
        return observation_spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}(group_size={self.group_size}, seed={self.seed}, group_id_key={self.group_id_key!r})"
