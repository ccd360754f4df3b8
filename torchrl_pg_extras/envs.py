"""GRPO groups on any batched TorchRL env, driven by the core's :class:`pg_extras.GroupScheduler`.

For control tasks a GRPO "query" is an initial state: a *group* is ``group_size`` episodes that start from the same
reset seed (docs/design.md "GRPO"). :class:`GroupedEnv` wraps a batched env: each time a sub-env resets, it asks the
scheduler for the next job (group, member, seed) and passes the job's seed in that same reset, so every finished
episode costs exactly one reset and no sub-env waits for another. Every step is labelled with the ``group_id`` and
``episode_id`` of its episode; :class:`~torchrl_pg_extras.GroupBatcher` turns the collected steps into batches of
whole groups. With ``greedy_member=True`` (ReMax) each group has one more member, flagged ``greedy``, that
:class:`GreedyMemberPolicy` plays with the deterministic action.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.data import Binary, Composite, Unbounded
from torchrl.envs import EnvBase, ExplorationType, Transform, TransformedEnv, set_exploration_type
from torchrl.envs.batched_envs import BatchedEnvBase

from pg_extras import GroupScheduler
from pg_extras.validation import check_bool, check_int
from torchrl_pg_extras._framework import native_autoreset

__all__ = ["ID_NAMESPACE", "GreedyMemberPolicy", "GroupedEnv"]

#: Episode and group ids of one :class:`GroupedEnv` lie in ``[k * ID_NAMESPACE, (k + 1) * ID_NAMESPACE)`` for its
#: ``id_offset = k * ID_NAMESPACE``: give collector worker ``k`` that offset (``id // ID_NAMESPACE`` is the worker).
ID_NAMESPACE = 2**40


class GroupedEnv(TransformedEnv):
    """A batched env whose sub-envs play the members of GRPO groups (same reset seed per group).

    Each reset of a sub-env (the first full reset, or the partial reset a collector does when an episode ends)
    ends that sub-env's episode in the :class:`pg_extras.GroupScheduler` (``finish``; a full reset ``abandon``\\ s
    the running episodes) and starts the next job: the seed of the job's group goes into that single reset, through
    ``list_of_kwargs`` of a :class:`~torchrl.envs.SerialEnv` / :class:`~torchrl.envs.ParallelEnv` (``reset(seed=...)``
    of each :class:`~torchrl.envs.GymEnv`), or as a list of seeds for a gymnasium vector env wrapped by
    :class:`~torchrl.envs.GymWrapper` (``autoreset_mode=AutoresetMode.DISABLED``), or as one seed for a single env.
    For dynamics that are deterministic given the seed, every member of a group starts from the same state.

    ``schedule="async"`` (default): a sub-env that finishes takes the next member at once, for any number of sub-envs
    ``N >= 1`` and any ``group_size >= 2`` (``N`` need not be a multiple of it). ``schedule="lockstep"``: rounds of
    ``N`` jobs; a sub-env that finished its job plays throw-away episodes labelled ``episode_id = -1`` (one step
    each) until the round is over.

    Every step carries ``group_id`` and ``episode_id`` (``int64``, shape ``[*batch, 1]``). The group ids of one env
    never collide with those of another env built with a different ``id_offset``: give collector worker ``k``
    ``id_offset=k * ID_NAMESPACE`` (``None``, the default, draws a random namespace). Staleness (how many policy
    versions a group spans) is bounded where the policy is updated, by :class:`~torchrl_pg_extras.GroupBatcher`.

    Args:
        base_env (EnvBase): a batched env of batch size ``[N]`` (or an unbatched env, ``N = 1``) whose sub-envs accept
            a seed keyword in ``reset``; native auto-resetting envs (gymnasium ``AutoresetMode.SAME_STEP`` /
            ``NEXT_STEP``) are rejected, since they reset without a seed.
        group_size (int): episodes per group, ``>= 2``.

    Keyword Args:
        seed (int, optional): seed of the scheduler's generator of group seeds (``None``: from the OS);
            :meth:`set_seed` re-seeds it.
        schedule (str): ``"async"`` (default) or ``"lockstep"``.
        id_offset (int, optional): added to every episode and group id (see above). ``None``: a random namespace.
        max_episode_steps (int, optional): an episode longer than this raises ``RuntimeError`` (GRPO needs whole
            episodes: an env that never ends would otherwise run forever). Defaults to ``100_000``; ``None`` disables
            the guard.
        group_id_key (NestedKey): where the group label is written. Defaults to ``"group_id"``.
        episode_id_key (NestedKey): where the episode label is written. Defaults to ``"episode_id"``.
        seed_kwarg (str): the seed keyword of the sub-envs' ``reset``. Defaults to ``"seed"``.
        greedy_member (bool): ReMax (docs/maths.md#remax): one more member per group, played from the group's seed
            with the deterministic action; its steps carry ``greedy`` True (wrap the collector's actor in
            :class:`GreedyMemberPolicy`, and use ``GroupRelativeAdvantage(mode="remax")``). Defaults to ``False``.
        greedy_key (NestedKey): where the greedy flag is written (``greedy_member=True``). Defaults to ``"greedy"``.

    Attributes:
        scheduler (pg_extras.GroupScheduler): the scheduler (its counters say how many groups were completed or
            abandoned).
        env_steps (int): env steps taken by this env (sub-env steps; in a collector worker, that worker's).

    Examples:
        >>> import torch
        >>> from torchrl.envs import GymEnv, SerialEnv
        >>> from torchrl_pg_extras import GroupedEnv
        >>> env = GroupedEnv(SerialEnv(3, lambda: GymEnv("CartPole-v1")), group_size=2, seed=0, id_offset=0)
        >>> td = env.reset()
        >>> td["group_id"].squeeze(-1).tolist(), td["episode_id"].squeeze(-1).tolist()  # 3 envs, groups of 2
        ([0, 0, 1], [0, 1, 2])
        >>> obs = td["observation"]
        >>> torch.equal(obs[0], obs[1]), torch.equal(obs[0], obs[2])  # same group, other group
        (True, False)
        >>> td = env.rand_step(td)
        >>> env.env_steps
        3
        >>> env.close()
    """

    def __init__(
        self,
        base_env: EnvBase,
        group_size: int,
        *,
        seed: int | None = None,
        schedule: str = "async",
        id_offset: int | None = None,
        max_episode_steps: int | None = 100_000,
        group_id_key: NestedKey = "group_id",
        episode_id_key: NestedKey = "episode_id",
        seed_kwarg: str = "seed",
        greedy_member: bool = False,
        greedy_key: NestedKey = "greedy",
    ) -> None:
        if not isinstance(base_env, EnvBase):
            raise TypeError(f"GroupedEnv needs a TorchRL env (EnvBase), got {type(base_env).__name__}.")
        batch_size = tuple(base_env.batch_size)
        if len(batch_size) > 1:
            raise ValueError(
                f"GroupedEnv needs an env with batch size [N] or [] (one env), got {list(batch_size)}: "
                "use SerialEnv / ParallelEnv(N, ...) or a gymnasium vector env wrapped by GymWrapper."
            )
        max_episode_steps = check_int("max_episode_steps", max_episode_steps, minimum=1, allow_none=True)
        id_offset = check_int("id_offset", id_offset, minimum=0, allow_none=True, hint="k * ID_NAMESPACE for worker k")
        if id_offset is None:
            id_offset = (int.from_bytes(os.urandom(3), "little") % 2**22) * ID_NAMESPACE
        inner = _innermost(base_env)
        _check_no_native_autoreset(inner)
        num_slots = batch_size[0] if batch_size else 1
        greedy_member = check_bool("greedy_member", greedy_member)
        scheduler = GroupScheduler(
            num_slots, group_size, seed=seed, schedule=schedule, id_offset=id_offset, greedy_member=greedy_member
        )
        greedy_key = greedy_key if greedy_member else None
        engine = _GroupLabels(scheduler, group_id_key, episode_id_key, max_episode_steps, greedy_key)
        super().__init__(base_env, engine)
        self.__dict__["_engine"] = engine  # also self.transform (or its first element): not registered twice
        self._seed_kwarg = seed_kwarg
        if isinstance(inner, BatchedEnvBase):
            self._seed_style = "list_of_kwargs"
        elif not batch_size:
            self._seed_style = "scalar"
        else:
            self._seed_style = "list"

    # -- public state -------------------------------------------------------------------------------------
    @property
    def scheduler(self) -> GroupScheduler:
        return self._engine.scheduler

    @property
    def group_size(self) -> int:
        return self._engine.scheduler.group_size

    @property
    def env_steps(self) -> int:
        return self._engine.env_steps

    @property
    def greedy_member(self) -> bool:
        return self._engine.scheduler.greedy_member

    def set_seed(self, seed: int | None = None, static_seed: bool = False) -> int | None:
        """Seed the sub-envs (as any TorchRL env) and the scheduler's generator of group seeds."""
        if seed is not None:
            self._engine.scheduler.seed(seed)
        return super().set_seed(seed, static_seed=static_seed)

    # -- reset: one seeded reset per finished episode -----------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs: Any) -> TensorDictBase:
        seeds = self._engine.start_jobs(self._reset_mask(tensordict))
        return super()._reset(tensordict, **self._with_seeds(seeds, kwargs))

    def _reset_mask(self, tensordict: TensorDictBase | None) -> torch.Tensor | None:
        """Sub-envs being reset (``None``: a full reset)."""
        if tensordict is None:
            return None
        mask = None
        for key in self.reset_keys:
            m = tensordict.get(key, default=None)
            if m is not None:
                m = m.reshape(self._engine.num_slots, -1).any(-1).cpu()
                mask = m if mask is None else mask | m
        return mask

    def _with_seeds(self, seeds: list[int | None], kwargs: dict[str, Any]) -> dict[str, Any]:
        name = self._seed_kwarg
        if name in kwargs:
            raise ValueError(f"GroupedEnv chooses the reset seeds itself (its groups'); do not pass {name}=... to reset.")
        if self._seed_style == "scalar":
            return {**kwargs, name: seeds[0]}
        if self._seed_style == "list":
            return {**kwargs, name: seeds}
        given = kwargs.pop("list_of_kwargs", None) or [{} for _ in seeds]
        per_env = [{**k, name: s} if s is not None else dict(k) for k, s in zip(given, seeds, strict=True)]
        return {**kwargs, "list_of_kwargs": per_env}

    def __repr__(self) -> str:
        return f"GroupedEnv(group_size={self.group_size}, schedule={self.scheduler.schedule!r}, base_env={self.base_env})"


def _innermost(env: EnvBase) -> EnvBase:
    while isinstance(env, TransformedEnv):
        env = env.base_env
    return env


def _check_no_native_autoreset(env: EnvBase) -> None:
    if native_autoreset(env):
        raise ValueError(
            "GroupedEnv cannot seed sub-envs that reset themselves inside step (native auto-reset, gymnasium "
            "AutoresetMode.SAME_STEP / NEXT_STEP): use SerialEnv / ParallelEnv of GymEnv, or "
            "gym.make_vec(..., vector_kwargs={'autoreset_mode': AutoresetMode.DISABLED}) wrapped in GymWrapper."
        )


class _GroupLabels(Transform):
    """The state of :class:`GroupedEnv`: running job per sub-env, labels, step counters (not a public transform)."""

    invertible = False

    def __init__(
        self,
        scheduler: GroupScheduler,
        group_id_key: NestedKey,
        episode_id_key: NestedKey,
        max_episode_steps: int | None,
        greedy_key: NestedKey | None = None,
    ) -> None:
        out_keys = [group_id_key, episode_id_key] + ([greedy_key] if greedy_key is not None else [])
        super().__init__(in_keys=[], out_keys=out_keys)
        self.scheduler = scheduler
        self.greedy_key = greedy_key
        self.group_id_key = group_id_key
        self.episode_id_key = episode_id_key
        self.max_episode_steps = max_episode_steps
        n = scheduler.num_slots
        self.num_slots = n
        self.episode = [-1] * n  # running episode of each sub-env (-1: none)
        self.group = [-1] * n
        self.greedy = [False] * n
        self.env_steps = 0
        # episode lengths without a per-step tensor op: length of sub-env i = self._t - self._start[i]
        self._t = 0
        self._start = [0] * n
        self._oldest_start = 0
        self._has_idle = False
        self._group_label = self._episode_label = torch.full((n, 1), -1, dtype=torch.int64)  # replaced, never mutated
        self._greedy_label = torch.zeros((n, 1), dtype=torch.bool)

    def start_jobs(self, mask: torch.Tensor | None) -> list[int | None]:
        """End the episodes of the sub-envs in ``mask`` (``None``: all, abandoned) and start their next jobs."""
        sched = self.scheduler
        if mask is None:
            sched.abandon_all()
            slots = list(range(self.num_slots))
        else:
            slots = mask.nonzero().flatten().tolist()
            for slot in slots:
                if self.episode[slot] >= 0:
                    sched.finish(self.episode[slot])  # a partial reset follows the end of the sub-env's episode
        sched.pop_complete()  # the harvest is GroupBatcher's (it reads the labels); this only frees the record
        seeds: list[int | None] = [None] * self.num_slots
        for slot in slots:
            job = sched.assign(slot)
            if job is None:  # lockstep: this sub-env waits for the round to end (throw-away episode)
                self.episode[slot] = self.group[slot] = -1
                self.greedy[slot] = False
            else:
                self.episode[slot], self.group[slot], seeds[slot] = job.episode, job.group, job.seed
                self.greedy[slot] = job.greedy
            self._start[slot] = self._t
        self._oldest_start = min(self._start)
        self._has_idle = min(self.episode) < 0
        self._group_label = torch.tensor(self.group, dtype=torch.int64).unsqueeze(-1)
        self._episode_label = torch.tensor(self.episode, dtype=torch.int64).unsqueeze(-1)
        self._greedy_label = torch.tensor(self.greedy, dtype=torch.bool).unsqueeze(-1)
        return seeds

    def _labels(self, td: TensorDictBase) -> TensorDictBase:
        shape = (*td.batch_size, 1)
        td.set(self.group_id_key, self._group_label.view(shape).to(td.device))
        td.set(self.episode_id_key, self._episode_label.view(shape).to(td.device))
        if self.greedy_key is not None:
            td.set(self.greedy_key, self._greedy_label.view(shape).to(td.device))
        return td

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase) -> TensorDictBase:
        return self._labels(tensordict_reset)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        self.env_steps += self.num_slots
        self._t += 1
        limit = self.max_episode_steps
        if limit is not None and self._t - self._oldest_start > limit:
            slot = self._start.index(self._oldest_start)
            raise RuntimeError(
                f"GroupedEnv: sub-env {slot} has played one episode for {self._t - self._oldest_start} steps without it "
                f"ending (max_episode_steps={limit}). GRPO needs whole episodes: add a time limit, e.g. "
                "TransformedEnv(env, StepCounter(max_steps=...)) or gymnasium's TimeLimit "
                "(gym.make(..., max_episode_steps=...)), or raise GroupedEnv(max_episode_steps=...)."
            )
        if self._has_idle:  # lockstep: end the throw-away episodes at once, so that they can join the next round
            idle = self._episode_label < 0
            for key in ("done", "truncated"):
                value = next_tensordict.get(key, default=None)
                if value is not None:
                    next_tensordict.set(key, value | idle.view(value.shape).to(value.device))
        return self._labels(next_tensordict)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        shape = (*observation_spec.shape, 1)
        for key in (self.group_id_key, self.episode_id_key):
            observation_spec[key] = Unbounded(shape=shape, dtype=torch.int64, device=observation_spec.device)
        if self.greedy_key is not None:
            observation_spec[self.greedy_key] = Binary(n=1, shape=shape, dtype=torch.bool, device=observation_spec.device)
        return observation_spec


class GreedyMemberPolicy(TensorDictModuleBase):
    """The collector's policy for ReMax groups: the actor's sampled action, except where ``greedy`` is True, where it
    takes the actor's deterministic action (``ExplorationType.DETERMINISTIC``: argmax / mode) — the greedy member of
    :class:`GroupedEnv` (``greedy_member=True``). The loss keeps using the actor itself.

    Args:
        actor: the policy (e.g. a :class:`~torchrl.modules.ProbabilisticActor`).
        greedy_key (NestedKey): the flag written by :class:`GroupedEnv`. Defaults to ``"greedy"``.
        action_key (NestedKey): the action the actor writes. Defaults to ``"action"``.

    Examples:
        >>> from torchrl.envs import GymEnv, SerialEnv
        >>> from torchrl_pg_extras import GroupedEnv
        >>> env = GroupedEnv(SerialEnv(3, lambda: GymEnv("CartPole-v1")), group_size=2, seed=0, id_offset=0,
        ...                  greedy_member=True)
        >>> env.reset()["greedy"].squeeze(-1).tolist()  # member 2 of group 0 is its greedy one
        [False, False, True]
        >>> env.close()
    """

    #: written on every step it acts, so that :class:`~torchrl_pg_extras.GroupBatcher` can tell that the greedy members
    #: did act greedily (and warn when the collector's policy is the bare actor)
    marker_key = "greedy_policy"

    def __init__(self, actor: TensorDictModuleBase, greedy_key: NestedKey = "greedy", action_key: NestedKey = "action"):
        super().__init__()
        self.actor = actor
        self.greedy_key = greedy_key
        self.action_key = action_key
        self.in_keys = [*actor.in_keys, greedy_key]
        self.out_keys = [*actor.out_keys, self.marker_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        greedy = tensordict.get(self.greedy_key, default=None)
        marker = torch.ones(*tensordict.batch_size, 1, dtype=torch.bool, device=tensordict.device)
        if greedy is None or not bool(greedy.any()):
            return self.actor(tensordict).set(self.marker_key, marker)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            mode = self.actor(tensordict.select(*self.actor.in_keys).clone(False)).get(self.action_key)
        out = self.actor(tensordict)
        action = out.get(self.action_key)
        flag = greedy.reshape(*greedy.shape[: tensordict.batch_dims], *([1] * (action.dim() - tensordict.batch_dims)))
        out.set(self.action_key, torch.where(flag.to(action.device), mode, action))
        return out.set(self.marker_key, marker)
