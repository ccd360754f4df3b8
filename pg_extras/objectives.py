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

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from pg_extras.kl import KL_ESTIMATORS, kl_estimate
from pg_extras.surrogate import (
    IMPORTANCE_SAMPLING_LEVELS,
    LOSS_AGGREGATIONS,
    _log_ratio,
    cispo_loss,
    clipped_surrogate_loss,
    sapo_loss,
)
from pg_extras.validation import check_bool, check_choice, check_finite, check_float, check_same_shape

__all__ = [
    "OBJECTIVE_OPTION_NAMES",
    "RATIO_RULES",
    "UPDATE_RULES",
    "ObjectiveOptions",
    "ObjectiveTerms",
    "entropy_bonus",
    "explained_variance",
    "kl_penalty",
    "objective_option",
    "policy_gradient_loss",
    "policy_loss",
    "policy_objective",
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
    if ref_log_prob is not None and log_prob is None:
        raise ValueError("ref_log_prob needs log_prob (the current policy's log-probabilities of the same actions).")
    penalty, kl, bonus = _regularizers(
        log_prob, ref_log_prob, entropy, beta, ent_coef, kl_estimator, old_log_prob, use_bias_correction_kl
    )
    total = loss
    for term in (penalty, bonus):
        if term is not None:
            total = total + term
    return total, kl


def _regularizers(
    log_prob: torch.Tensor | None,
    ref_log_prob: torch.Tensor | None,
    entropy: torch.Tensor | None,
    beta: float,
    ent_coef: float,
    kl_estimator: str,
    old_log_prob: torch.Tensor | None,
    use_bias_correction_kl: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(beta * KL or None, KL or None, -ent_coef * H or None)`` per step, the two terms of :func:`regularized_loss`
    and :func:`policy_objective`: the KL is estimated whenever ``ref_log_prob`` is given (for logging), its term is on
    only with ``beta``; a coefficient without its input is refused."""
    penalty = kl = None
    if ref_log_prob is not None:
        penalty, kl = kl_penalty(
            log_prob,  # type: ignore[arg-type]
            ref_log_prob,
            beta,
            kl_estimator,
            old_log_prob=old_log_prob,
            use_bias_correction_kl=use_bias_correction_kl,
        )
    elif beta:
        raise ValueError(f"beta={beta} needs ref_log_prob (the reference policy's log-probabilities).")
    bonus = None
    if ent_coef:
        if entropy is None:
            raise ValueError(f"ent_coef={ent_coef} needs entropy (see pg_extras.entropy_or_estimate without a closed form).")
        bonus = entropy_bonus(entropy, ent_coef)
    return (penalty if beta else None), kl, bonus


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


@dataclasses.dataclass(frozen=True)
class ObjectiveOptions:
    """The options of :func:`policy_objective`, checked once when built (errors name the argument and the fix).

    Every adapter builds one from its own constructor arguments (SB3's ``GRPO(update_rule=...)``, TorchRL's
    ``GRPOLoss(update_rule=...)``) and hands it to :func:`policy_objective`; ``dataclasses.replace`` re-checks. The
    coefficients (``clip_range``, ``beta``, ``ent_coef``) are arguments of the call instead, since SB3 schedules them and
    TorchRL keeps them live.

    :param update_rule: one of :data:`UPDATE_RULES` (docs/maths.md#10-estimators-x-update-rules).
    :param delta: ``"ppo_clip"``'s two-sided clip (``> 1``; ``None``: off).
    :param clip_ratio_c: ``"ppo_clip"``'s dual clip (``> 1``; ``None``: off).
    :param sapo_temperature_pos: ``"sapo"``'s temperature where ``A > 0``.
    :param sapo_temperature_neg: ``"sapo"``'s temperature where ``A <= 0``.
    :param importance_sampling_level: ``"token"`` or ``"sequence"`` (GSPO).
    :param kl_estimator: the estimator of ``KL(pi || pi_ref)`` (:data:`pg_extras.KL_ESTIMATORS`).
    :param use_bias_correction_kl: weight the KL estimate by ``pi / pi_old`` (TRL's option).
    :param loss_aggregation: :func:`pg_extras.aggregate_loss`'s mode, for the adapter's layout.
    :param mask_truncated_completions: leave the truncated episodes out of the loss (the adapter's loss mask).
    :param top_entropy_quantile: the fraction of steps whose policy term is kept, by entropy (``1.0``: all).
    :param update_rules: the rules the holder accepts (GRPO: :data:`RATIO_RULES`); ``update_rule`` is checked against it
        whenever the options are built, a later ``model.update_rule = ...`` included.

    Example::

        >>> ObjectiveOptions("ppo_clip", delta=4.0).policy_loss_kwargs()["delta"]
        4.0
    """

    update_rule: str = "ppo_clip"
    delta: float | None = None
    clip_ratio_c: float | None = None
    sapo_temperature_pos: float = 1.0
    sapo_temperature_neg: float = 1.05
    importance_sampling_level: str = "token"
    kl_estimator: str = "k3"
    use_bias_correction_kl: bool = False
    loss_aggregation: str = "grpo"
    mask_truncated_completions: bool = False
    top_entropy_quantile: float = 1.0
    update_rules: tuple[str, ...] = UPDATE_RULES

    def __post_init__(self) -> None:
        rule = check_choice("update_rule", self.update_rule, self.update_rules)
        if rule in RATIO_RULES:
            rule_options = ratio_rule_options(
                rule, self.delta, self.clip_ratio_c, self.sapo_temperature_pos, self.sapo_temperature_neg
            )
        else:
            for name in ("delta", "clip_ratio_c"):
                value = getattr(self, name)
                if value is not None:
                    raise ValueError(f"{name}={value} is a bound of update_rule='ppo_clip', not {rule!r}: remove it.")
            rule_options = ratio_rule_options("ppo_clip", None, None, self.sapo_temperature_pos, self.sapo_temperature_neg)
        checked = dict(
            rule_options,
            importance_sampling_level=check_choice(
                "importance_sampling_level", self.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS
            ),
            kl_estimator=check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS),
            use_bias_correction_kl=check_bool("use_bias_correction_kl", self.use_bias_correction_kl),
            loss_aggregation=check_choice("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS),
            mask_truncated_completions=check_bool("mask_truncated_completions", self.mask_truncated_completions),
            top_entropy_quantile=check_float(
                "top_entropy_quantile", self.top_entropy_quantile, 0.0, 1.0, low_inclusive=False,
                hint="the fraction of steps kept in the policy loss, e.g. 0.2; 1.0 keeps every step",
            ),
        )  # fmt: skip
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any], **overrides: Any) -> ObjectiveOptions:
        """The options named in ``arguments`` (an adapter's constructor arguments, e.g. its ``locals()``), the other
        keys ignored; ``overrides`` replace values first.

        Example::

            >>> ObjectiveOptions.from_arguments(dict(update_rule="sapo", n_epochs=10)).update_rule
            'sapo'
        """
        values = {**arguments, **overrides}
        return cls(**{name: values[name] for name in OBJECTIVE_OPTION_NAMES if name in values})

    def policy_loss_kwargs(self) -> dict[str, Any]:
        """The keyword options of :func:`policy_loss` (the ratio variants and the importance-sampling level)."""
        names = ("delta", "clip_ratio_c", "sapo_temperature_pos", "sapo_temperature_neg", "importance_sampling_level")
        return {name: getattr(self, name) for name in names}


#: the fields of :class:`ObjectiveOptions` (the constructor arguments an adapter hands over as they are)
OBJECTIVE_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(ObjectiveOptions))


@dataclasses.dataclass(frozen=True)
class ObjectiveTerms:
    """What :func:`policy_objective` returns: the per-step loss terms ``[*S]`` and their diagnostics.

    ``policy``: the update rule's term (zero outside the top-entropy steps); ``kl_penalty``: ``beta * KL`` (``None``
    when ``beta = 0``); ``entropy_bonus``: ``-ent_coef * H`` (``None`` when ``ent_coef = 0``). Diagnostics: ``kl``
    (the KL to the reference, weighted with ``use_bias_correction_kl``), ``entropy``, ``clipped`` (bool),
    ``approx_kl`` (SB3's ``approx_kl``: the k3 estimate of ``KL(pi_old || pi)``), ``entropy_mask_fraction`` (a
    scalar tensor, with ``top_entropy_quantile < 1``).
    """

    policy: torch.Tensor
    clipped: torch.Tensor
    kl_penalty: torch.Tensor | None = None
    entropy_bonus: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    approx_kl: torch.Tensor | None = None
    entropy_mask_fraction: torch.Tensor | None = None

    def losses(self) -> dict[str, torch.Tensor]:
        """The loss terms that are on: ``{"policy", "kl_penalty", "entropy_bonus"}`` (per step)."""
        terms = {"policy": self.policy, "kl_penalty": self.kl_penalty, "entropy_bonus": self.entropy_bonus}
        return {name: term for name, term in terms.items() if term is not None}

    def total(self) -> torch.Tensor:
        """The per-step objective to minimise: the sum of :meth:`losses`."""
        return sum(self.losses().values())  # type: ignore[return-value]


def policy_objective(
    options: ObjectiveOptions,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor | None,
    advantages: torch.Tensor,
    *,
    clip_range: float | None = None,
    clip_range_high: float | None = None,
    beta: float = 0.0,
    ent_coef: float = 0.0,
    ref_log_prob: torch.Tensor | None = None,
    entropy: torch.Tensor | Callable[[], torch.Tensor] | None = None,
    in_loss: torch.Tensor | None = None,
    episode_index: torch.Tensor | None = None,
) -> ObjectiveTerms:
    """The whole per-step policy objective of every update rule (docs/maths.md#6-grpo, #10, #12), in one place.

    ``policy_loss(options.update_rule, ...)`` per step, kept on the top-entropy steps only when
    ``options.top_entropy_quantile < 1`` (Wang et al. 2025), plus ``beta * KL(pi || pi_ref)`` (:func:`kl_penalty`) and
    ``-ent_coef * H`` (:func:`entropy_bonus`). Aggregating the terms over the steps is the adapter's, on its layout
    (:func:`pg_extras.aggregate_loss` with ``options.loss_aggregation``, or TorchRL's ``reduction``).

    :param log_prob: ``[*S]`` current log-probabilities of the taken actions (with autograd).
    :param old_log_prob: ``[*S]`` behaviour log-probabilities (``None`` only for ``"pg"``; then no ``approx_kl``).
    :param advantages: ``[*S]``, treated as constants.
    :param ref_log_prob: ``[*S]`` the reference policy's (needed when ``beta > 0``; given with ``beta = 0``, the KL is
        only logged).
    :param entropy: ``[*S]`` per-step entropy, or a function that returns it (called only when needed: ``ent_coef`` or
        the top-entropy mask); see :func:`pg_extras.entropy_or_estimate` for distributions without a closed form.
    :param in_loss: bool ``[*S]`` the steps in the loss, among which the top-entropy fraction is taken (default all).
    :param episode_index: ``[*S]`` episode of each step (``importance_sampling_level="sequence"`` only).

    Example::

        >>> options = ObjectiveOptions("ppo_clip")
        >>> lp = torch.log(torch.tensor([1.5, 0.5]))
        >>> terms = policy_objective(options, lp, torch.zeros(2), torch.ones(2), clip_range=0.2)
        >>> terms.policy, terms.clipped
        (tensor([-1.2000, -0.5000]), tensor([True, True]))
    """
    policy, clipped = policy_loss(
        options.update_rule,
        log_prob,
        old_log_prob,
        advantages,
        clip_range,
        clip_range_high,
        episode_index=episode_index,
        **options.policy_loss_kwargs(),
    )
    if callable(entropy) and (ent_coef or options.top_entropy_quantile < 1.0):
        entropy = entropy()
    elif callable(entropy):
        entropy = None
    fraction = None
    if options.top_entropy_quantile < 1.0:  # the policy term of the high-entropy steps only (TRL)
        from pg_extras.variants import top_entropy_mask  # variants -> group -> objectives: imported here, not at the top

        if entropy is None:
            raise ValueError("top_entropy_quantile < 1 ranks the steps by entropy: pass entropy (a tensor or a function).")
        valid = torch.ones_like(policy, dtype=torch.bool) if in_loss is None else in_loss.to(torch.bool)
        ranked = torch.where(valid, entropy.detach(), torch.zeros_like(policy))  # padding may hold anything
        keep = top_entropy_mask(ranked, options.top_entropy_quantile, valid)
        policy = torch.where(keep, policy, torch.zeros_like(policy))
        fraction = keep.sum().to(policy.dtype) / valid.sum().clamp(min=1)
    penalty, kl, bonus = _regularizers(
        log_prob,
        ref_log_prob,
        entropy,  # type: ignore[arg-type]
        beta,
        ent_coef,
        options.kl_estimator,
        old_log_prob,
        options.use_bias_correction_kl,
    )
    approx_kl = None if old_log_prob is None else kl_estimate(old_log_prob, log_prob.detach(), "k3")
    return ObjectiveTerms(
        policy=policy,
        clipped=clipped,
        kl_penalty=penalty,
        entropy_bonus=bonus,
        kl=kl,
        entropy=entropy,  # type: ignore[arg-type]
        approx_kl=approx_kl,
        entropy_mask_fraction=fraction,
    )


class ObjectiveOptionAttributes:
    """Mixin of an adapter that holds an :class:`ObjectiveOptions` in ``objective_options``: every field is an
    attribute of the adapter (:func:`objective_option`), read from and set into the options (SB3's ``GRPO``, TorchRL's
    ``GRPOLoss``).

    Example::

        >>> class Loss(ObjectiveOptionAttributes):
        ...     objective_options = ObjectiveOptions()
        >>> Loss().kl_estimator
        'k3'
    """

    objective_options: ObjectiveOptions


def objective_option(name: str, holder: str = "objective_options") -> property:
    """A class attribute that reads and sets field ``name`` of the :class:`ObjectiveOptions` held in ``holder``.

    Setting it builds a new, re-checked options object (``dataclasses.replace``), so ``model.update_rule = "cispo"``
    (SB3) or ``loss.top_entropy_quantile = 0.2`` (TorchRL) takes effect at the next update and a bad value is refused.

    Example::

        >>> class Loss:
        ...     objective_options = ObjectiveOptions()
        ...     update_rule = objective_option("update_rule")
        >>> loss = Loss()
        >>> loss.update_rule = "cispo"
        >>> loss.objective_options.update_rule
        'cispo'
    """
    if name not in OBJECTIVE_OPTION_NAMES:
        raise ValueError(f"{name!r} is not a field of ObjectiveOptions.")

    def get(self: Any) -> Any:
        return getattr(getattr(self, holder), name)

    def set_(self: Any, value: Any) -> None:
        setattr(self, holder, dataclasses.replace(getattr(self, holder), **{name: value}))

    return property(get, set_, doc=f"``{name}`` of :class:`pg_extras.ObjectiveOptions` (re-checked when set).")


for _name in OBJECTIVE_OPTION_NAMES:
    setattr(ObjectiveOptionAttributes, _name, objective_option(_name))
del _name
