"""Discounted returns-to-go and generalised advantage estimation (GAE).

All functions are time-major: tensors have shape ``[T, *B]`` (for example ``[n_steps, n_envs]`` as in
SB3's rollout buffer, or ``[T]`` for one flat stream of episodes separated by ``done`` flags).
There is no Python loop over time steps: the linear recurrence ``y_t = x_t + c * (1 - done_t) * y_{t+1}``
is evaluated in chunks with a masked discount matrix (see :func:`discounted_cumsum`).

Maths: docs/maths.md#2-reinforce-and-return-to-go (return-to-go ``G_t = sum_k gamma^(k-t) r_k``), 2.3 (baseline), and
Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation".
"""

from __future__ import annotations

import torch

from pg_extras.validation import check_finite, check_int, check_same_shape, check_unit_interval

__all__ = [
    "complete_episode_mask",
    "discounted_cumsum",
    "episode_returns",
    "gae",
    "next_values_from_values",
    "returns_to_go",
]

_CHUNK = 128
_RESCALE_HINT = "rescale the rewards, e.g. with VecNormalize(norm_reward=True) or a reward scale wrapper"
_CRITIC_HINT = (
    "the critic diverged or its input is bad: lower its learning rate, normalise the rewards / returns "
    "(VecNormalize), or clip its gradients (max_grad_norm)"
)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Integer / bool rewards are promoted to the default float dtype (discounting needs fractions)."""
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def discounted_cumsum(x: torch.Tensor, discount: float, done: torch.Tensor | None = None, chunk: int = _CHUNK) -> torch.Tensor:
    """Reverse discounted cumulative sum with resets.

    Computes ``y_t = x_t + discount * (1 - done_t) * y_{t+1}`` with ``y_T = 0``, i.e.
    ``y_t = sum_{k=t}^{e(t)} discount^(k-t) x_k`` where ``e(t)`` is the first ``k >= t`` with ``done_k``.

    :param x: values, shape ``[T, *B]``.
    :param discount: scalar discount in [0, 1].
    :param done: bool, shape ``[T, *B]``: the sum stops after a step where ``done`` is true. ``None``: no resets.
    :param chunk: time-chunk length of the vectorised evaluation (memory ``chunk^2 * prod(B)``).
    :return: tensor of shape ``[T, *B]``, dtype of ``x`` (integer ``x`` is promoted to the default float dtype);
        empty if ``T = 0``.
    :raises ValueError: if ``x`` has NaN / inf, or the sums overflow the dtype.

    Example::

        >>> discounted_cumsum(torch.tensor([1.0, 1.0, 1.0]), 0.5, torch.tensor([False, True, False]))
        tensor([1.5000, 1.0000, 1.0000])
    """
    discount = check_unit_interval("discount", discount)
    chunk = check_int("chunk", chunk, minimum=1)  # type: ignore[assignment]
    if x.dim() == 0:
        raise ValueError("x must have a leading time dimension [T, *B], got a scalar.")
    if done is not None:
        check_same_shape("x", x, done=done)
    x = _as_float(x)
    check_finite("x", x, hint="the values to sum must be finite")
    out = _discounted_cumsum(x, discount, done, chunk)
    return check_finite("discounted sums", out, hint=_RESCALE_HINT, derived_from="x")


def _discounted_cumsum(
    x: torch.Tensor, discount: float, done: torch.Tensor | None = None, chunk: int = _CHUNK
) -> torch.Tensor:
    """:func:`discounted_cumsum` without the argument and finiteness checks (``x`` finite and floating)."""
    if done is None:
        done = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    if x.numel() == 0:  # empty time or batch dimension
        return torch.zeros_like(x)
    T = x.shape[0]
    batch_shape = x.shape[1:]
    xs = x.reshape(T, -1)
    ds = done.reshape(T, -1).to(torch.bool)
    out = torch.empty_like(xs)
    carry = torch.zeros_like(xs[0])
    # Powers discount^0 .. discount^chunk computed once (in float64 for accuracy, then cast).
    n = min(chunk, T)
    powers = discount ** torch.arange(n + 1, device=x.device, dtype=torch.float64)
    offsets = torch.arange(n, device=x.device)
    lag = offsets[None, :] - offsets[:, None]  # lag[t, k] = k - t
    upper = lag >= 0
    base = torch.where(upper, powers[lag.clamp(min=0)], torch.zeros((), dtype=torch.float64, device=x.device)).to(x.dtype)
    for end in range(T, 0, -n):
        start = max(0, end - n)
        length = end - start
        xc, dc = xs[start:end], ds[start:end]
        # seg[t] = number of dones strictly before t in the chunk; t..k in one segment iff seg[t] == seg[k].
        dint = dc.to(torch.int64)
        seg = torch.cumsum(dint, 0) - dint
        same = seg[:, None, :] == seg[None, :, :]  # [L, L, B]
        w = base[:length, :length, None] * same
        yc = torch.einsum("tkb,kb->tb", w, xc)
        # Carry from the next chunk reaches t when no done lies in [t, end - 1].
        reach = (dint.sum(0, keepdim=True) - seg) == 0
        decay = powers[length - torch.arange(length, device=x.device)].to(x.dtype)[:, None]
        yc = yc + reach * decay * carry
        out[start:end] = yc
        carry = yc[0]
    return out.reshape(T, *batch_shape)


def complete_episode_mask(done: torch.Tensor) -> torch.Tensor:
    """Steps whose episode ends inside the rollout (so a Monte-Carlo return can be computed).

    :param done: bool ``[T, *B]``, ``terminated | truncated``.
    :return: bool ``[T, *B]``, true at step ``t`` iff some ``k >= t`` has ``done_k``.

    Example::

        >>> complete_episode_mask(torch.tensor([False, True, False]))
        tensor([ True,  True, False])
    """
    d = done.to(torch.int64)
    return torch.flip(torch.cummax(torch.flip(d, [0]), 0).values, [0]).to(torch.bool)


def next_values_from_values(
    values: torch.Tensor,
    last_values: torch.Tensor,
    final_values: torch.Tensor | None = None,
    truncated: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build ``V(s_{t+1})`` for every step from the critic's values on the rollout.

    :param values: ``V(s_t)``, shape ``[T, *B]``.
    :param last_values: ``V(s_T)`` of the observation after the rollout, shape ``[*B]``.
    :param final_values: where ``truncated``, the value of the episode's final observation (before reset), ``[T, *B]``.
    :param truncated: bool ``[T, *B]``.
    :return: ``[T, *B]`` next-state values (those at terminated steps are ignored by :func:`gae`).
    """
    nxt = torch.cat([values[1:], last_values.reshape(1, *values.shape[1:]).to(values)], 0)
    if final_values is not None:
        if truncated is None:
            raise ValueError("final_values needs truncated: pass the truncation flags of the rollout.")
        nxt = torch.where(truncated.to(torch.bool), final_values.to(values), nxt)
    return nxt


def returns_to_go(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor | None = None,
    gamma: float = 0.99,
    next_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discounted Monte-Carlo returns-to-go ``G_t`` (docs/maths.md §2) that tell termination from truncation.

    ``G_t = r_t + gamma * G_{t+1}`` inside an episode; at a ``terminated`` step ``G_t = r_t`` (no bootstrap);
    at a ``truncated`` step, or at the last step of the rollout when the episode is still running,
    ``G_t = r_t + gamma * next_values_t`` if ``next_values`` is given, else ``G_t = r_t`` (no bootstrap).
    Use :func:`complete_episode_mask` to drop steps of episodes cut by the rollout end.

    :param rewards: ``[T, *B]`` rewards.
    :param terminated: bool ``[T, *B]``: true terminal states.
    :param truncated: bool ``[T, *B]`` or ``None``: time-limit ends.
    :param gamma: discount factor in [0, 1].
    :param next_values: ``[T, *B]`` value of the next observation (only read at truncations and at ``t = T-1``).
    :return: ``[T, *B]`` returns-to-go (empty if ``T = 0``).
    :raises ValueError: naming ``rewards`` or ``next_values`` (where read) if NaN / inf, or ``returns`` if they
        overflow the dtype (rescale the rewards).

    Example::

        >>> r = torch.ones(4)
        >>> returns_to_go(r, torch.tensor([False, True, False, False]), gamma=0.5)
        tensor([1.5000, 1.0000, 1.5000, 1.0000])
    """
    gamma = check_unit_interval("gamma", gamma)
    check_same_shape("rewards", rewards, terminated=terminated, truncated=truncated, next_values=next_values)
    rewards = _as_float(rewards)
    check_finite("rewards", rewards, hint="the environment returned NaN/inf rewards; check it or clip its rewards")
    terminated = terminated.to(torch.bool)
    truncated = torch.zeros_like(terminated) if truncated is None else truncated.to(torch.bool) & ~terminated
    done = terminated | truncated
    if rewards.numel() == 0:
        return torch.zeros_like(rewards)
    x = rewards
    if next_values is not None:
        boot = truncated.clone()
        boot[-1] |= ~done[-1]
        used = torch.where(boot, next_values.to(rewards), torch.zeros_like(rewards))
        check_finite("next_values", used, hint=f"the bootstrap values V(s_T) are NaN/inf: {_CRITIC_HINT}")
        x = rewards + gamma * used
    returns = _discounted_cumsum(x, gamma, done)
    return check_finite("returns", returns, hint=_RESCALE_HINT, derived_from="rewards")


def episode_returns(rewards: torch.Tensor, done: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """The discounted return ``sum_t gamma^t r_t`` of each episode of a flat sequence of whole episodes, in order: its
    return-to-go (:func:`returns_to_go`) at its first step. What decides a group's spread (DAPO's dynamic sampling).

    :param rewards: ``[N]`` rewards of whole episodes, one after the other.
    :param done: bool ``[N]``: the last step of each episode (the last entry must be one).
    :return: ``[n_episodes]``.

    Example::

        >>> episode_returns(torch.ones(5), torch.tensor([False, True, False, False, True]), gamma=0.5)
        tensor([1.5000, 1.7500])
    """
    done = done.to(torch.bool)
    if rewards.dim() != 1 or done.shape != rewards.shape:
        raise ValueError(f"rewards and done: expected two [N] tensors, got {tuple(rewards.shape)} and {tuple(done.shape)}.")
    if rewards.numel() and not bool(done[-1]):
        raise ValueError("done: the last step must end an episode (whole episodes only).")
    starts = torch.ones_like(done)
    starts[1:] = done[:-1]
    return returns_to_go(rewards, done, gamma=gamma)[starts]


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor | None = None,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with ``done = terminated | truncated``.
    At a truncated step ``next_values`` must hold the value of the final observation (bootstrap);
    see :func:`next_values_from_values`.

    :param rewards: ``[T, *B]``.
    :param values: ``V(s_t)``, ``[T, *B]``.
    :param next_values: ``V(s_{t+1})``, ``[T, *B]``.
    :param terminated: bool ``[T, *B]``.
    :param truncated: bool ``[T, *B]`` or ``None``.
    :param gamma: discount in [0, 1].
    :param gae_lambda: lambda in [0, 1]; 1 gives Monte-Carlo returns minus values, 0 gives TD(0).
    :return: ``(advantages, value_targets)``, both ``[T, *B]``, ``value_targets = advantages + values``.
    :raises ValueError: naming ``rewards``, ``values`` or ``next_values`` (where read: not at terminated steps) if
        NaN / inf, or ``advantages`` / ``value targets`` if they overflow the dtype.

    Example::

        >>> done = torch.tensor([False, False, True])
        >>> adv, ret = gae(torch.ones(3), torch.zeros(3), torch.zeros(3), done, gamma=1.0, gae_lambda=1.0)
        >>> adv
        tensor([3., 2., 1.])
    """
    gamma = check_unit_interval("gamma", gamma)
    gae_lambda = check_unit_interval("gae_lambda", gae_lambda)
    check_same_shape("rewards", rewards, values=values, next_values=next_values, terminated=terminated, truncated=truncated)
    rewards = _as_float(rewards)
    check_finite("rewards", rewards, hint="the environment returned NaN/inf rewards; check it or clip its rewards")
    values = values.to(rewards)
    check_finite("values", values, hint=f"the critic's values V(s_t) are NaN/inf: {_CRITIC_HINT}")
    terminated = terminated.to(torch.bool)
    done = terminated if truncated is None else terminated | truncated.to(torch.bool)
    # V(s_{t+1}) is not read at terminated steps (whatever it holds there).
    next_v = torch.where(terminated, torch.zeros_like(rewards), next_values.to(rewards))
    check_finite("next_values", next_v, hint=f"the critic's values V(s_t+1) are NaN/inf: {_CRITIC_HINT}")
    if rewards.numel() == 0:
        return torch.zeros_like(rewards), torch.zeros_like(rewards)
    delta = rewards + gamma * next_v - values
    advantages = _discounted_cumsum(delta, gamma * gae_lambda, done)
    check_finite("advantages", advantages, hint=_RESCALE_HINT, derived_from="rewards and values")
    targets = advantages + values
    check_finite("value targets (returns)", targets, hint=_RESCALE_HINT, derived_from="rewards and values")
    return advantages, targets
