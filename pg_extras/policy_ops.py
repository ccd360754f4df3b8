"""What a trust-region update needs from a policy: its surrogate, its KL and which parameters are the actor.

Pure torch (no RL-framework import); the SB3 ``TRPO`` and TorchRL's ``TRPOLoss`` both call these
(docs/maths.md#4-importance-ratio-and-trpo; Schulman et al. 2015, https://arxiv.org/abs/1502.05477):

* :func:`trust_region_surrogate`: ``mean(rho * A)``, the importance-ratio surrogate TRPO maximises;
* :func:`action_kl`: the exact ``KL(pi_old || pi)`` of the action distribution, averaged over the batch: the
  trust-region constraint. ``kl_reduction="mean"`` (the default, sb3-contrib's convention) averages the per-dimension
  KLs of a Box / MultiBinary action; ``"joint"`` sums them (the KL of the joint distribution); independent components
  (MultiDiscrete sub-actions) add up in both. :func:`joint_kl` is ``action_kl(..., kl_reduction="joint")``;
* :func:`reachable_parameters`: the parameters an output depends on (the actor / critic split, by the graph);
* :func:`sample_categorical`, :func:`sample_diag_gaussian` and :func:`diag_gaussian_log_prob`: a policy's rollout
  step (action and its log-probability) without building distribution objects, with torch's random draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.distributions import Categorical, Distribution, OneHotCategorical
from torch.nn import functional as F

from pg_extras.kl import categorical_kl, exact_kl
from pg_extras.surrogate import aggregate_loss, importance_ratio
from pg_extras.validation import check_choice, check_same_shape

__all__ = [
    "DEFAULT_KL_REDUCTION",
    "KL_REDUCTIONS",
    "action_dims",
    "action_kl",
    "diag_gaussian_log_prob",
    "entropy_or_estimate",
    "joint_kl",
    "reachable_parameters",
    "sample_categorical",
    "sample_diag_gaussian",
    "trust_region_surrogate",
]

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))
#: How the trust-region KL reduces over the dimensions of one action component (docs/maths.md#kl-reduction):
#: ``"mean"`` averages them (sb3-contrib's ``kl_divergence(...).mean()``), ``"joint"`` sums them (the exact joint KL).
KL_REDUCTIONS = ("mean", "joint")
#: The one default of every trust-region KL (core, SB3 ``TRPO``, TorchRL ``TRPOLoss``): sb3-contrib's convention.
DEFAULT_KL_REDUCTION = "mean"


def trust_region_surrogate(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """TRPO's surrogate ``L = mean(rho * A)``, ``rho = exp(log_prob - old_log_prob)`` (docs/maths.md#the-surrogate-objective).

    The unclipped ratio surrogate (the negative of :func:`pg_extras.clipped_surrogate_loss` with ``clip_range=None``,
    averaged), without that function's finite checks on ``log_prob``: a line search evaluates it at trial parameters
    and must be able to reject a non-finite value instead of raising (:func:`pg_extras.line_search`).

    :param log_prob: ``[*S]`` log-probabilities of the taken actions under the current policy (with a graph).
    :param old_log_prob: ``[*S]`` the same under the behaviour policy (a constant; must be finite).
    :param advantages: ``[*S]`` (treated as a constant).
    :param mask: optional bool ``[*S]``: the mean runs over the ``True`` steps only (0 if there is none).
    :return: scalar surrogate, to maximise.

    Example::

        >>> trust_region_surrogate(torch.log(torch.tensor([1.5, 0.5])), torch.zeros(2), torch.tensor([1.0, 2.0]))
        tensor(1.2500)
    """
    check_same_shape("log_prob", log_prob, advantages=advantages)
    per_step = importance_ratio(log_prob, old_log_prob) * advantages.detach()
    if mask is None:
        return per_step.mean()
    check_same_shape("log_prob", log_prob, mask=mask)
    return aggregate_loss(per_step.reshape(-1), mask.reshape(-1), "bnpo")


def action_dims(dist: Distribution, batch_dims: int = 1) -> int:
    """How many action dimensions one sample of ``dist`` has: what ``kl_reduction="mean"`` divides its KL by.

    The dimensions of the batch shape after the first ``batch_dims`` times the event size; a categorical
    (``Categorical`` or ``OneHotCategorical``, whose event is one one-hot vector) is one action dimension per batch
    entry. ``Normal`` of batch shape ``[B, 3]``: 3; ``Independent(Normal([B, 3]), 1)``: 3; ``Categorical([B])``: 1.

    Example::

        >>> action_dims(torch.distributions.Normal(torch.zeros(5, 3), torch.ones(5, 3)))
        3
    """
    size = math.prod(dist.batch_shape[batch_dims:])
    if isinstance(dist, (Categorical, OneHotCategorical)):
        return size
    return size * math.prod(dist.event_shape)


def action_kl(
    old: Sequence[Distribution],
    new: Sequence[Distribution],
    batch_dims: int = 1,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    num_samples: int = 0,
    kl_reduction: str = DEFAULT_KL_REDUCTION,
) -> torch.Tensor:
    """Exact ``KL(pi_old(.|s) || pi(.|s))`` of an action distribution, averaged over the batch (docs/maths.md#exact-kl).

    A policy's action distribution is given as independent components (one ``Categorical`` per MultiDiscrete
    sub-action, a ``Normal`` over a Box, ...): their KLs add up. Within one component the KL of each action dimension
    (the dimensions after the first ``batch_dims`` and the event dimensions, :func:`action_dims`) is averaged
    (``kl_reduction="mean"``, sb3-contrib's ``kl_divergence(...).mean()``, the default) or summed (``"joint"``: the KL
    of the joint distribution, ``"mean"`` times the action dimension for a diagonal Gaussian; docs/maths.md#kl-reduction).
    Categoricals use the lean :func:`pg_extras.categorical_kl` (so that its double backward is cheap); other pairs use
    torch's closed forms (:func:`pg_extras.exact_kl`). This is TRPO's constraint ``mean_s KL <= delta`` when ``old``
    are detached copies of ``new`` at ``theta_old``.

    :param old: the behaviour / old distributions (detached).
    :param new: the current distributions, one per component of ``old``, same batch shape.
    :param batch_dims: leading dimensions that index samples (the rest are action dimensions).
    :param mask: optional bool ``[*B]`` (the first ``batch_dims`` dimensions): the mean runs over the ``True`` samples.
    :param reduction: ``"mean"`` (scalar) or ``"none"`` (per-sample ``[*B]``; ``mask`` is then ignored).
    :param num_samples: for pairs without a closed form, estimate with this many samples (``k3``); 0: raise.
    :param kl_reduction: ``"mean"`` or ``"joint"``, over the action dimensions of each component (see above).
    :return: scalar mean KL (or ``[*B]`` per-sample KL).

    Example::

        >>> from torch.distributions import Normal
        >>> old = [Normal(torch.zeros(2, 3), torch.ones(2, 3))]
        >>> new = [Normal(torch.tensor([[1.0, 0.0, 0.0]] * 2), torch.ones(2, 3))]
        >>> action_kl(old, new), action_kl(old, new, kl_reduction="joint")  # 0.5 / 3 and 0.5
        (tensor(0.1667), tensor(0.5000))
    """
    check_choice("reduction", reduction, ("mean", "none"))
    check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
    if batch_dims < 0:
        raise ValueError(f"batch_dims must be >= 0, got {batch_dims}.")
    if len(old) != len(new) or not old:
        raise ValueError(
            f"old has {len(old)} distributions and new has {len(new)}: pass one new distribution per old one (at least one)."
        )
    total: torch.Tensor | None = None
    for p, q in zip(old, new, strict=True):
        if type(p) is Categorical and type(q) is Categorical:
            kl = categorical_kl(p.logits, q.logits)
        else:
            kl = exact_kl(p, q, num_samples=num_samples)
        if kl.dim() < batch_dims:
            raise ValueError(
                f"a {type(p).__name__} KL has shape {tuple(kl.shape)}, fewer than batch_dims={batch_dims} dimensions."
            )
        if kl.dim() > batch_dims:
            kl = kl.reshape(*kl.shape[:batch_dims], -1).sum(-1)
        if kl_reduction == "mean":
            kl = kl / max(action_dims(p, batch_dims), 1)
        if total is not None and kl.shape != total.shape:
            raise ValueError(
                f"the components have batch shapes {tuple(total.shape)} and {tuple(kl.shape)}: pass distributions over "
                "the same batch (or set batch_dims)."
            )
        total = kl if total is None else total + kl
    assert total is not None
    if reduction == "none":
        return total
    if mask is None:
        return total.mean()
    check_same_shape("kl", total, mask=mask)
    return aggregate_loss(total.reshape(-1), mask.reshape(-1), "bnpo")


def joint_kl(old: Sequence[Distribution], new: Sequence[Distribution], *args: Any, **kwargs: Any) -> torch.Tensor:
    """The exact KL of the joint action distribution: :func:`action_kl` (same arguments) with ``kl_reduction="joint"``.

    Example::

        >>> old = [Categorical(logits=torch.zeros(2, 3)), Categorical(logits=torch.zeros(2, 2))]
        >>> new = [Categorical(logits=torch.tensor([[1.0, 0.0, 0.0]] * 2)), Categorical(logits=torch.zeros(2, 2))]
        >>> joint_kl(old, new)
        tensor(0.1195)
    """
    return action_kl(old, new, *args, **{**kwargs, "kl_reduction": "joint"})


def reachable_parameters(outputs: Sequence[torch.Tensor], params: Sequence[Any]) -> list[Any]:
    """The members of ``params`` that the autograd graph of ``outputs`` reaches (in the order of ``params``).

    Walks ``grad_fn.next_functions`` down to the leaves (no backward pass is run, so it costs microseconds). TRPO
    uses it to split a policy into actor parameters (reached by the action distribution) and critic parameters
    (reached only by the value head), whatever the modules are called.

    Example::

        >>> lin, other = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
        >>> out = lin(torch.ones(1, 2))
        >>> [p.shape for p in reachable_parameters([out], [*lin.parameters(), *other.parameters()])]
        [torch.Size([1, 2]), torch.Size([1])]
    """
    found: set[int] = set()
    seen: set[Any] = set()
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
    found.update(id(o) for o in outputs if o.grad_fn is None and o.requires_grad)  # an output that is a leaf itself
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # AccumulateGrad nodes hold the leaf tensor
        if variable is not None:
            found.add(id(variable))
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None and nxt not in seen)
    return [p for p in params if id(p) in found]


def sample_categorical(logits: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """An action ``a ~ Categorical(logits)`` (the most likely one if ``deterministic``) and ``log pi(a)``.

    The same tensor operations, random draws and values as ``torch.distributions.Categorical(logits=logits)``'s
    ``sample()`` (``probs.argmax(-1)`` for ``deterministic``) and ``log_prob``, without building the distribution:
    for a policy's rollout step, where the distribution object costs more than the network.

    :param logits: ``[*B, K]`` unnormalised log-probabilities.
    :return: ``(actions [*B] int64, log_prob [*B])``.

    Example::

        >>> sample_categorical(torch.tensor([[0.0, 5.0, 0.0]]), deterministic=True)
        (tensor([1]), tensor([-0.0134]))
    """
    log_p = logits - logits.logsumexp(dim=-1, keepdim=True)  # as Categorical(logits=...)
    probs = F.softmax(log_p, dim=-1)
    if deterministic:
        actions = torch.argmax(probs, dim=-1)
    elif probs.dim() == 2:  # a batch of states (every rollout step): the draw's [B, 1] indices serve the gather
        index = torch.multinomial(probs, 1, True)
        return index.squeeze(-1), log_p.gather(-1, index).squeeze(-1)
    else:
        actions = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).T.reshape(probs.shape[:-1])
    return actions, log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def diag_gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``log N(a; mean, diag(std^2))`` summed over the last dimension (the action dimensions), as torch's ``Normal``.

    Example::

        >>> diag_gaussian_log_prob(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2))  # 2 * -log(sqrt(2 pi))
        tensor([-1.8379])
    """
    return (-((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=-1)


def sample_diag_gaussian(
    mean: torch.Tensor, std: torch.Tensor, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """An action ``a ~ N(mean, diag(std^2))`` (``mean`` if ``deterministic``) and its log-density (summed over the last
    dimension); the same random draws and values as ``Normal(mean, std).rsample()`` / ``.log_prob(a).sum(-1)``.

    :param mean: ``[*B, d]``.
    :param std: ``[*B, d]`` (> 0).
    :return: ``(actions [*B, d], log_prob [*B])``.

    Example::

        >>> sample_diag_gaussian(torch.zeros(1, 2), torch.ones(1, 2), deterministic=True)
        (tensor([[0., 0.]]), tensor([-1.8379]))
    """
    actions = mean if deterministic else mean + torch.empty_like(mean).normal_() * std
    return actions, diag_gaussian_log_prob(actions, mean, std)


def entropy_or_estimate(entropy: torch.Tensor | None, sample_log_prob: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The policy entropy per step: its closed form ``entropy`` when there is one, else the one-sample estimate
    ``-log pi(a~|s)`` of a fresh action ``a~ ~ pi(.|s)`` (``sample_log_prob()``, drawn with ``rsample`` where the
    distribution has it): the one rule of every adapter for distributions without a closed-form entropy (a tanh-squashed
    Gaussian, gSDE with squashing, TorchRL's ``TanhNormal``). Not the stored action's ``-log pi(a_t|s_t)``: on-policy its
    gradient has expectation zero, so an entropy bonus built on it would do nothing; the reparameterised estimate's
    gradient is the entropy's (docs/maths.md#entropy).

    Example::

        >>> mean, log_std = torch.zeros(3, 2), torch.zeros(3, 2, requires_grad=True)
        >>> normal = torch.distributions.Normal(mean, log_std.exp())
        >>> entropy_or_estimate(None, lambda: normal.log_prob(normal.rsample()).sum(-1)).shape
        torch.Size([3])
    """
    return entropy if entropy is not None else -sample_log_prob()
