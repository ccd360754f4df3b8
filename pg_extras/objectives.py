"""Update rules: the per-step policy losses, their regularisers, and the statistics both adapters log.

Each update rule is one function of per-step tensors (docs/maths.md#10-estimators-x-update-rules):

* ``"pg"``: the score-function loss ``-log pi(a|s) * A`` (REINFORCE, Williams 1992);
* ``"ppo_clip"``: ``-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)`` (Schulman et al. 2017; DAPO clip-higher);
* ``"trust_region"``: the importance-ratio surrogate ``-rho A`` whose natural step under ``KL <= delta`` is
  :func:`pg_extras.trust_region_step` (Schulman et al. 2015);
* ``"cispo"``: ``-sg(min(rho, 1 + eps_high)) A log pi`` (MiniMax-M1; :func:`pg_extras.cispo_loss`);
* ``"sapo"``: the soft gate ``-(4 / tau) sigmoid(tau (rho - 1)) A`` (SAPO; :func:`pg_extras.sapo_loss`).

The ratio variants of docs/maths.md#12-variants (GSPO's sequence-level ratio, the two-sided clip ``delta``, the
dual clip ``clip_ratio_c``) are keyword options of :func:`policy_loss`. :func:`regularized_loss` adds
``beta * KL(pi || pi_ref)`` (optionally importance-weighted, TRL's ``use_bias_correction_kl``) and
``-ent_coef * H`` (GRPO's per-step objective).
Every SB3 algorithm and TorchRL loss module calls these; none writes the formulas itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from pg_extras.kl import kl_estimate
from pg_extras.surrogate import _log_ratio, cispo_loss, clipped_surrogate_loss, sapo_loss
from pg_extras.validation import check_bool, check_choice, check_finite, check_float, check_same_shape

__all__ = [
    "RATIO_RULES",
    "UPDATE_RULES",
    "entropy_bonus",
    "explained_variance",
    "kl_penalty",
    "policy_gradient_loss",
    "policy_loss",
    "ratio_rule_options",
    "regress_critic",
    "regularized_loss",
    "standardize",
]

#: The update rules of :func:`policy_loss`.
UPDATE_RULES = ("pg", "ppo_clip", "trust_region", "cispo", "sapo")
#: The update rules that clip or gate an importance ratio (the ones ``GRPO(update_rule=...)`` takes).
RATIO_RULES = ("ppo_clip", "cispo", "sapo")


def policy_gradient_loss(log_prob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Per-step score-function loss ``-log pi(a_t|s_t) * A_t`` (docs/maths.md#2-reinforce-and-return-to-go).

    Its gradient, averaged over steps, is the Monte-Carlo policy gradient; ``advantages`` is treated as a constant.

    Example::

        >>> policy_gradient_loss(torch.tensor([-0.5, -1.0]), torch.tensor([2.0, -1.0]))
        tensor([ 1., -1.])
    """
    check_same_shape("log_prob", log_prob, advantages=advantages)
    return -log_prob * advantages.detach()


def policy_loss(
    rule: str,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor | None,
    advantages: torch.Tensor,
    clip_range: float | None = None,
    clip_range_high: float | None = None,
    *,
    delta: float | None = None,
    clip_ratio_c: float | None = None,
    importance_sampling_level: str = "token",
    episode_index: torch.Tensor | None = None,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step policy loss of an update rule in :data:`UPDATE_RULES`.

    :param rule: ``"pg"``, ``"ppo_clip"``, ``"trust_region"``, ``"cispo"`` or ``"sapo"``.
    :param log_prob: ``[*S]`` log-probabilities of the taken actions under the current policy.
    :param old_log_prob: ``[*S]`` the same under the behaviour policy (not needed by ``"pg"``).
    :param advantages: ``[*S]``.
    :param clip_range: ``eps_low`` of ``"ppo_clip"`` (and the default ``eps_high`` of ``"cispo"``).
    :param clip_range_high: ``eps_high`` of ``"ppo_clip"``; ``"cispo"`` caps the weight at ``1 + eps_high``
        (``None``: ``clip_range``).
    :param delta: ``"ppo_clip"``: two-sided clip, cap of the unclipped ratio (``> 1``; ``None``: off).
    :param clip_ratio_c: ``"ppo_clip"``: dual-clip constant (``> 1``; ``None``: off).
    :param importance_sampling_level: ``"token"`` or ``"sequence"`` (GSPO) for the ratio rules.
    :param episode_index: ``[*S]`` integer episode of each step (``"sequence"`` only).
    :param sapo_temperature_pos: ``"sapo"``: temperature where ``A > 0``.
    :param sapo_temperature_neg: ``"sapo"``: temperature where ``A <= 0``.
    :return: ``(loss [*S], clipped [*S] bool)``; ``clipped`` is all False for ``"pg"``, ``"trust_region"`` and
        ``"sapo"``.

    Example::

        >>> lp, old, adv = torch.log(torch.tensor([1.5])), torch.zeros(1), torch.ones(1)
        >>> policy_loss("ppo_clip", lp, old, adv, clip_range=0.2)[0], policy_loss("trust_region", lp, old, adv)[0]
        (tensor([-1.2000]), tensor([-1.5000]))
    """
    check_choice("rule", rule, UPDATE_RULES)
    if rule == "pg":
        return policy_gradient_loss(log_prob, advantages), torch.zeros_like(log_prob, dtype=torch.bool)
    if old_log_prob is None:
        raise ValueError(f"rule={rule!r} needs old_log_prob (the behaviour log-probabilities stored at collection).")
    level = dict(importance_sampling_level=importance_sampling_level, episode_index=episode_index)
    if rule == "trust_region":
        return clipped_surrogate_loss(log_prob, old_log_prob, advantages, None, **level)
    if rule == "sapo":
        return sapo_loss(log_prob, old_log_prob, advantages, sapo_temperature_pos, sapo_temperature_neg, **level)
    if clip_range is None:
        raise ValueError(f"rule={rule!r} needs clip_range (e.g. 0.2).")
    if rule == "cispo":
        high = clip_range if clip_range_high is None else clip_range_high
        return cispo_loss(log_prob, old_log_prob, advantages, 1.0 + high, **level)
    return clipped_surrogate_loss(
        log_prob, old_log_prob, advantages, clip_range, clip_range_high, delta=delta, clip_ratio_c=clip_ratio_c, **level
    )


def regularized_loss(
    loss: torch.Tensor,
    log_prob: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    beta: float = 0.0,
    ent_coef: float = 0.0,
    kl_estimator: str = "k3",
    *,
    old_log_prob: torch.Tensor | None = None,
    use_bias_correction_kl: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``loss + beta * KL(pi || pi_ref) - ent_coef * H`` per step (GRPO's objective, docs/maths.md#6-grpo).

    The KL is the per-sample estimate :func:`pg_extras.kl_estimate` of ``KL(pi || pi_ref)`` from the taken actions
    (``k3`` by default, DeepSeekMath; ``k1``, ``k2``, ``k3+`` too). Without a closed-form entropy pass
    ``entropy=-log_prob`` (one-sample estimate).

    ``use_bias_correction_kl`` (TRL's option, DeepSeek-V3.2): the actions were sampled by the behaviour policy, not by
    ``pi``, so the per-step KL estimate is weighted by the importance ratio ``pi / pi_old`` (with its gradient), which
    makes it an unbiased estimate of ``KL(pi || pi_ref)`` and, for ``k3``, its gradient the gradient of that KL
    (docs/maths.md#12-variants). Needs ``old_log_prob``.

    :return: ``(total [*S], kl [*S] or None)``; the KL (weighted when ``use_bias_correction_kl``) is returned for
        logging (``None`` without ``ref_log_prob``).

    Example::

        >>> total, kl = regularized_loss(torch.zeros(2), torch.log(torch.tensor([0.5, 0.5])),
        ...                              torch.log(torch.tensor([0.25, 0.5])), beta=1.0)
        >>> total
        tensor([0.1931, 0.0000])
    """
    total, kl = loss, None
    if ref_log_prob is not None:
        if log_prob is None:
            raise ValueError("ref_log_prob needs log_prob (the current policy's log-probabilities of the same actions).")
        penalty, kl = kl_penalty(
            log_prob,
            ref_log_prob,
            beta,
            kl_estimator,
            old_log_prob=old_log_prob,
            use_bias_correction_kl=use_bias_correction_kl,
        )
        if beta:
            total = total + penalty
    elif beta:
        raise ValueError(f"beta={beta} needs ref_log_prob (the reference policy's log-probabilities).")
    if ent_coef:
        if entropy is None:
            raise ValueError(f"ent_coef={ent_coef} needs entropy (see pg_extras.entropy_or_estimate without a closed form).")
        total = total + entropy_bonus(entropy, ent_coef)
    return total, kl


def kl_penalty(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    beta: float,
    kl_estimator: str = "k3",
    *,
    old_log_prob: torch.Tensor | None = None,
    use_bias_correction_kl: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL term of :func:`regularized_loss` on its own: ``(beta * KL, KL)`` per step, the KL estimated by
    :func:`pg_extras.kl_estimate` against the detached ``ref_log_prob`` (importance-weighted by ``pi / pi_old`` with
    ``use_bias_correction_kl``). TorchRL's ``GRPOLoss`` reports it as ``loss_kl_to_ref``.

    Example::

        >>> kl_penalty(torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25])), beta=2.0)[0]
        tensor([0.3863])
    """
    use_bias_correction_kl = check_bool("use_bias_correction_kl", use_bias_correction_kl)
    kl = kl_estimate(log_prob, ref_log_prob.detach(), kl_estimator)
    if use_bias_correction_kl:
        if old_log_prob is None:
            raise ValueError("use_bias_correction_kl=True needs old_log_prob (the behaviour log-probabilities) for the ratio.")
        check_same_shape("log_prob", log_prob, old_log_prob=old_log_prob)
        kl = kl * torch.exp(_log_ratio(log_prob, old_log_prob))
        check_finite(
            "bias-corrected KL estimate",
            kl.detach(),
            hint="the importance ratio pi / pi_old overflowed: lower the learning rate or the number of epochs",
            derived_from="log_prob and old_log_prob",
        )
    return beta * kl, kl


def entropy_bonus(entropy: torch.Tensor, ent_coef: float) -> torch.Tensor:
    """The entropy term of :func:`regularized_loss` on its own: ``-ent_coef * H`` per step (TorchRL's
    ``loss_entropy``).

    Example::

        >>> entropy_bonus(torch.tensor([0.5, 1.0]), 0.1)
        tensor([-0.0500, -0.1000])
    """
    return -ent_coef * entropy


def standardize(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / (std + eps * max|x|)`` over the valid entries (unbiased std, SB3's advantage normalisation).

    The statistics are computed on ``x / max|x|``, so the result does not depend on the scale of ``x`` and squaring
    never overflows (docs/maths.md#11-numerical-robustness). A single valid entry is only centred (its std is
    undefined); invalid entries are returned as 0.

    Example::

        >>> standardize(torch.tensor([1.0, 2.0, 3.0]))
        tensor([-1.0000,  0.0000,  1.0000])
        >>> torch.allclose(standardize(torch.tensor([1e-30, 2e-30, 3e-30])), torch.tensor([-1.0, 0.0, 1.0]))
        True
    """
    valid = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.to(torch.bool)
    check_same_shape("x", x, mask=valid)
    check_finite("x", torch.where(valid, x, torch.zeros_like(x)), hint="the advantages to standardise")
    n = valid.sum()
    if int(n) == 0:
        return torch.zeros_like(x)
    zero = torch.zeros_like(x)
    scale = torch.where(valid, x.abs(), zero).max()
    if float(scale) == 0.0:
        return zero
    y = torch.where(valid, x / scale, zero)
    centred = torch.where(valid, y - y.sum() / n, zero)
    if int(n) < 2:
        return centred * scale
    std = torch.sqrt((centred**2).sum() / (n - 1))
    return centred / (std + eps)


def explained_variance(y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``1 - Var[y_true - y_pred] / Var[y_true]`` over valid entries (SB3's ``train/explained_variance``).

    Returns NaN when ``y_true`` has zero variance, as SB3 does.

    Example::

        >>> explained_variance(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]))
        1.0
    """
    check_same_shape("y_pred", y_pred, y_true=y_true)
    if mask is not None:
        y_pred, y_true = y_pred[mask.to(torch.bool)], y_true[mask.to(torch.bool)]
    y_pred, y_true = y_pred.detach().double(), y_true.detach().double()
    if y_true.numel() < 2:
        return float("nan")
    var = torch.var(y_true, unbiased=False)
    if float(var) == 0.0:
        return float("nan")
    return float(1.0 - torch.var(y_true - y_pred, unbiased=False) / var)


def ratio_rule_options(
    update_rule: str = "ppo_clip",
    delta: float | None = None,
    clip_ratio_c: float | None = None,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
) -> dict[str, Any]:
    """Check the options of the ratio rules (docs/maths.md section 12) once, for every adapter.

    :return: the keyword arguments of :func:`policy_loss` for ``update_rule`` (``delta`` / ``clip_ratio_c`` only with
        ``"ppo_clip"``, where they are > 1; SAPO temperatures > 0).

    Example::

        >>> ratio_rule_options("ppo_clip", delta=4.0)["delta"]
        4.0
    """
    rule = check_choice("update_rule", update_rule, RATIO_RULES)
    options: dict[str, Any] = {}
    for name, value, hint in (("delta", delta, "the cap of the ratio, e.g. 4.0"), ("clip_ratio_c", clip_ratio_c, "e.g. 3.0")):
        value = check_float(name, value, 1.0, low_inclusive=False, allow_none=True, allow_inf=True, hint=f"{hint}; None: off")
        if value is not None and rule != "ppo_clip":
            raise ValueError(f"{name}={value} is a bound of update_rule='ppo_clip', not {rule!r}: remove it.")
        options[name] = value
    for name, value in (("sapo_temperature_pos", sapo_temperature_pos), ("sapo_temperature_neg", sapo_temperature_neg)):
        options[name] = check_float(name, value, 0.0, low_inclusive=False, hint="SAPO's gate temperature, e.g. 1.0")
    return options


def regress_critic(
    predict: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    parameters: Sequence[torch.nn.Parameter] = (),
    frozen: Sequence[torch.nn.Parameter] = (),
    max_grad_norm: float | None = None,
    permutation: Callable[[int], torch.Tensor] | None = None,
    hint: str = "the critic diverged: lower its learning rate or rescale the rewards",
) -> list[float]:
    """``epochs`` passes of minibatch MSE regression of a critic on ``targets`` (docs/maths.md#3-baselines-and-gae):
    the critic fit of TRPO and of REINFORCE with baseline (sb3-contrib's and SB3's loop).

    Each pass shuffles the ``N`` steps (``permutation(N)``, default ``torch.randperm``) and takes one ``optimizer`` step
    per ``batch_size`` minibatch on ``mean((predict(index) - targets[index])^2)``; ``frozen`` parameters (an actor that
    shares a features extractor) get no gradient, ``parameters`` are clipped to ``max_grad_norm``.

    :param predict: ``index [b] -> V(s) [b]`` of those steps (with autograd).
    :return: the loss of each minibatch. :raises ValueError: a non-finite loss (``hint``), before its step is taken.

    Example::

        >>> critic = torch.nn.Linear(1, 1)
        >>> x, y = torch.randn(64, 1), torch.randn(64)
        >>> losses = regress_critic(lambda i: critic(x[i]).flatten(), y, torch.optim.SGD(critic.parameters(), 0.1), 2, 16)
        >>> len(losses)
        8
    """
    n = int(targets.numel())
    losses: list[float] = []
    for _ in range(epochs):
        order = torch.randperm(n, device=targets.device) if permutation is None else permutation(n)
        for index in order.split(batch_size):
            loss = F.mse_loss(predict(index), targets[index])
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                check_finite("value loss", loss.detach(), hint=hint)
            optimizer.zero_grad()
            loss.backward()
            for param in frozen:
                param.grad = None
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(parameters), max_grad_norm)
            optimizer.step()
    return losses
