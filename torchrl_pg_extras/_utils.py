"""Small helpers shared by the TorchRL adapters: layout conversion, masks, log-probabilities, entropy.

TorchRL batches are ``[*B, T]`` with the time dimension last (or the one named ``"time"``); the core
(:mod:`pg_extras`) is time-major ``[T, N]``. Everything here only moves data between the two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import warnings
from collections.abc import Iterable, Sequence

import torch
from tensordict import TensorDictBase, is_tensor_collection
from tensordict.nn import CompositeDistribution
from tensordict.utils import NestedKey, unravel_key

from pg_extras import entropy_or_estimate

__all__ = [
    "actor_context",
    "as_batch",
    "check_time_ordered",
    "entropy_of",
    "from_time_major",
    "gather_mask",
    "get_required",
    "log_prob_of",
    "time_dim",
    "to_time_major",
]


def get_required(tensordict: TensorDictBase, key: NestedKey, key_name: str, owner: str) -> torch.Tensor:
    """``tensordict.get(key)`` with an error that names the ``set_keys`` entry to fix."""
    value = tensordict.get(key, default=None)
    if value is None:
        raise KeyError(
            f"{owner}: the entry {key!r} (tensor key {key_name!r}) is missing from the input tensordict. "
            f"Write it upstream or rename the key with {owner}.set_keys({key_name}=<your key>)."
        )
    return value


def end_flags(tensordict: TensorDictBase, keys: object, owner: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(done, terminated, truncated)`` of the ``("next", ...)`` entries named by ``keys`` (a loss's or an advantage
    module's ``tensor_keys``), as bool: the one place an episode end is read. A missing ``terminated`` is ``done`` (no
    truncation known); a missing ``truncated`` is a ``done`` that is not a termination; ``done`` covers both."""
    done = get_required(tensordict, ("next", keys.done), "done", owner).to(torch.bool)  # type: ignore[attr-defined]
    terminated = tensordict.get(("next", keys.terminated), default=None)  # type: ignore[attr-defined]
    terminated = done if terminated is None else terminated.to(torch.bool)
    truncated = tensordict.get(("next", keys.truncated), default=None)  # type: ignore[attr-defined]
    truncated = (done if truncated is None else truncated.to(torch.bool)) & ~terminated
    return done | terminated | truncated, terminated, truncated


def time_dim(tensordict: TensorDictBase, time_dim: int | None = None, owner: object = None) -> int:
    """The time dimension, with the rule of TorchRL's value estimators (``ValueEstimatorBase._get_time_dim``):
    ``time_dim``, else ``owner.time_dim``, else the dimension named ``"time"``, else the last one; refused (with the
    valid range) when it is not a batch dimension of ``tensordict``."""
    ndim = tensordict.batch_dims
    if ndim < 1:
        raise ValueError(
            f"Expected a tensordict with a time dimension (batch_dims >= 1), got batch_size={tensordict.batch_size}."
        )
    chosen = time_dim if time_dim is not None else getattr(owner, "time_dim", None)
    if chosen is None:
        names = list(tensordict.names)
        if "time" in names:
            return names.index("time")
        if ndim >= 3 and tensordict.batch_size[-1] == 1:  # [E, L, 1]: a trailing singleton is not time
            raise ValueError(
                f"batch_size={tuple(tensordict.batch_size)} ends in a singleton dimension, which would be read as time "
                "(every step an episode of its own): squeeze it (tensordict.squeeze(-1)), or pass time_dim=<the "
                "dimension that indexes time>, or name that dimension 'time' (tensordict.refine_names(..., 'time'))."
            )
        return ndim - 1
    if isinstance(chosen, bool) or not isinstance(chosen, int) or not -ndim <= chosen < ndim:
        raise ValueError(
            f"time_dim={chosen!r} is not a batch dimension of a tensordict with batch_size={tuple(tensordict.batch_size)}: "
            f"use an integer in [{-ndim}, {ndim - 1}] (the dimension that indexes time; default: the last)."
        )
    return chosen % ndim


def as_batch(x: torch.Tensor, batch_shape: torch.Size, name: str) -> torch.Tensor:
    if x.shape[: len(batch_shape)] != batch_shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected leading batch shape {tuple(batch_shape)}.")
    extra = x.shape[len(batch_shape) :]
    if extra.numel() != 1:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: one value per step is expected (batch shape {tuple(batch_shape)} "
            "plus an optional trailing singleton dimension). Multi-agent / multi-objective entries are not supported."
        )
    return x.reshape(batch_shape)


def to_time_major(x: torch.Tensor, batch_shape: torch.Size, time_dim: int, name: str = "tensor") -> torch.Tensor:
    """``[*B, T, (1)]`` (time at ``time_dim``) -> ``[T, N]`` with ``N`` the product of the other batch dims."""
    x = as_batch(x, batch_shape, name)
    others = math.prod(s for i, s in enumerate(batch_shape) if i != time_dim)  # explicit: a [B, 0] batch is [0, B]
    return x.movedim(time_dim, 0).reshape(batch_shape[time_dim], others)


def from_time_major(y: torch.Tensor, batch_shape: torch.Size, time_dim: int) -> torch.Tensor:
    """Inverse of :func:`to_time_major`: ``[T, N]`` -> ``[*B, T, 1]``."""
    others = [s for i, s in enumerate(batch_shape) if i != time_dim]
    return y.reshape(batch_shape[time_dim], *others).movedim(0, time_dim).unsqueeze(-1)


def gather_mask(tensordict: TensorDictBase, keys: Iterable[NestedKey]) -> torch.Tensor | None:
    """AND of the boolean masks found under ``keys`` (trailing singleton dims dropped), or ``None``."""
    batch_shape = tensordict.batch_size
    mask = None
    for key in keys:
        m = tensordict.get(key, default=None)
        if m is None:
            continue
        while m.ndim > len(batch_shape) and m.shape[-1] == 1:
            m = m.squeeze(-1)
        if m.shape != batch_shape:
            raise ValueError(f"The mask {key!r} has shape {tuple(m.shape)}, expected the batch shape {tuple(batch_shape)}.")
        m = m.to(torch.bool)
        mask = m if mask is None else mask & m
    return mask


def actor_context(module: torch.nn.Module, params: TensorDictBase | None):
    """Context that runs ``module`` with ``params`` (functional call), or as it is when ``params`` is ``None``."""
    if params is None:
        return contextlib.nullcontext()
    return params.to_module(module, preserve_module_state=False)


def _to_batch(lp: torch.Tensor, batch_shape: Sequence[int]) -> torch.Tensor:
    """Sum the event dimensions of a log-prob / entropy so that it has exactly the batch shape."""
    batch_shape = torch.Size(batch_shape)
    if lp.shape == batch_shape:
        return lp
    if lp.shape[: len(batch_shape)] == batch_shape:
        return lp.reshape(*batch_shape, -1).sum(-1)
    raise ValueError(
        f"The policy's log-probability / entropy has shape {tuple(lp.shape)}, which does not start with the batch shape "
        f"{tuple(batch_shape)}: check the actor's distribution and the action shape."
    )


def _sum_leaves(td: TensorDictBase, batch_shape: Sequence[int]) -> torch.Tensor:
    return sum(_to_batch(v, batch_shape) for v in td.values(True, True))


def log_prob_of(
    dist: torch.distributions.Distribution, tensordict: TensorDictBase, action_key: NestedKey, owner: str
) -> torch.Tensor:
    """Log-probability of the stored action(s) under ``dist``, with the tensordict's batch shape."""
    batch_shape = tensordict.batch_size
    if isinstance(dist, CompositeDistribution):
        lp = dist.log_prob(tensordict)
    else:
        action = get_required(tensordict, action_key, "action", owner)
        if action.requires_grad:
            raise RuntimeError(f"{owner}: the stored action {action_key!r} requires grad; detach it before the loss.")
        _check_categorical_action(dist, action, batch_shape, owner)
        lp = dist.log_prob(action)
    if is_tensor_collection(lp):
        return _sum_leaves(lp, batch_shape)
    return _to_batch(lp, batch_shape)


def _check_categorical_action(dist: torch.distributions.Distribution, action: torch.Tensor, batch_shape, owner: str) -> None:
    """A ``Categorical`` actor scores an action index; a one-hot action (``GymEnv``'s default action spec) would be read
    as several indices and broadcast into a wrong log-probability without an error: refuse it with the fix."""
    if not isinstance(dist, torch.distributions.Categorical):
        return
    n = dist.logits.shape[-1]
    if action.dim() > len(batch_shape) and action.shape[-1] == n and n > 1:
        raise ValueError(
            f"{owner}: the actions have a trailing dimension of size {n}, the number of categories: they look one-hot "
            "(the default action spec of GymEnv for a Discrete space) but the actor is a Categorical, which expects "
            "action indices. Build the env with GymEnv(..., categorical_action_encoding=True), or use a "
            "OneHotCategorical actor."
        )


def entropy_of(dist: torch.distributions.Distribution, batch_shape: Sequence[int]) -> torch.Tensor:
    """Entropy per step: analytic when available, else :func:`pg_extras.entropy_or_estimate`'s one-sample estimate."""
    try:
        ent = dist.entropy()
    except NotImplementedError:
        ent = None
    if ent is not None and not is_tensor_collection(ent) and bool(torch.isfinite(ent).all()):
        return _to_batch(ent, batch_shape)
    if ent is not None and is_tensor_collection(ent):
        return _sum_leaves(ent, batch_shape)

    def sample_log_prob() -> torch.Tensor:
        lp = dist.log_prob(dist.rsample() if getattr(dist, "has_rsample", False) else dist.sample())
        return _sum_leaves(lp, batch_shape) if is_tensor_collection(lp) else _to_batch(lp, batch_shape)

    return entropy_or_estimate(None, sample_log_prob)


def check_key_names(owner: object, keys: dict) -> None:
    """``set_keys(**keys)`` with a name that ``owner``'s ``_AcceptedKeys`` lacks: a ``ValueError`` listing the valid names
    (TorchRL's own message prints the dataclass fields, or names none)."""
    valid = sorted(f.name for f in dataclasses.fields(owner.default_keys))  # type: ignore[attr-defined]
    unknown = [name for name in keys if name not in valid]
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        raise ValueError(
            f"{type(owner).__name__}.set_keys: unknown key {unknown[0]!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; the keys are: {', '.join(valid)}."
        )


def deprecated_discount(owner: str, **given: float | None) -> dict[str, float]:
    """The discount arguments (``gamma``, ``lmbda``) given to a loss constructor, with a ``DeprecationWarning``: as
    TorchRL's own losses, they belong to the value estimator (``loss.make_value_estimator(gamma=..., lmbda=...)``)."""
    passed = {k: v for k, v in given.items() if v is not None}
    if passed:
        args = ", ".join(f"{k}={v!r}" for k, v in passed.items())
        warnings.warn(
            f"{owner}({args}): passing the discount to the loss is deprecated, as in torchrl.objectives: call "
            f"loss.make_value_estimator({args}) instead (it still works here).",
            DeprecationWarning,
            stacklevel=3,
        )
    return passed


def check_time_ordered(tensordict: TensorDictBase, done_key: NestedKey, tdim: int, owner: str) -> None:
    """Refuse a batch whose steps are not in time order (shuffled or flattened replay-buffer samples, envs flattened
    into one row) before an advantage module reads it as trajectories.

    The evidence is the collector's ``("collector", "traj_ids")``: along ``tdim`` the trajectory id may change only
    after a step that ended its episode. A batch without trajectory ids (one built by hand) is not checked.
    """
    ids = tensordict.get(("collector", "traj_ids"), default=None)
    if not isinstance(ids, torch.Tensor) or tensordict.batch_size[tdim] < 2:
        return
    ids = ids.reshape(*tensordict.batch_size, -1)[..., 0]
    steps = ids.shape[tdim]
    changes = ids.narrow(tdim, 1, steps - 1) != ids.narrow(tdim, 0, steps - 1)
    done = tensordict.get(unravel_key(("next", done_key)), default=None)
    if done is not None:
        changes = changes & ~done.reshape(*tensordict.batch_size, -1).any(-1).narrow(tdim, 0, steps - 1).to(torch.bool)
    broken = int(changes.sum())
    if broken:
        raise ValueError(
            f"{owner}: the batch is not in time order: at {broken} of {changes.numel()} steps, ('collector', 'traj_ids') "
            f"changes along dimension {tdim} (read as time) without the episode ending. The advantage of a trajectory "
            "needs the steps as the collector wrote them: compute it on the collected batch (loss.compute_advantage(batch) "
            "or the advantage module, before flattening, shuffling or sampling minibatches from a replay buffer; "
            "TRPOStepper under a Trainer does so), or pass time_dim=<the dimension that indexes time>."
        )
