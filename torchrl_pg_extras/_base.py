"""Common base of the pg-extras TorchRL losses: keys, functional networks, masks, reductions, value estimators.

The maths is the core's (:mod:`pg_extras`); reductions and masks are :class:`~torchrl.objectives.LossModule`'s own
(:meth:`~torchrl.objectives.LossModule._reduce_loss` with ``loss_mask_key="auto"``: TorchRL's ``("collector",
"mask")`` and the validity ``"shifted_valid"`` that the advantage modules write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, dispatch_value_estimator, distance_loss
from torchrl.objectives.value import ValueEstimatorBase

from pg_extras import ObjectiveOptions, ObjectiveTerms, explained_variance, policy_objective, standardize
from pg_extras.validation import check_bool, check_choice, check_finite, check_float
from torchrl_pg_extras._utils import (
    actor_context,
    as_batch,
    check_key_names,
    check_time_ordered,
    entropy_of,
    gather_mask,
    get_required,
    log_prob_of,
    time_dim,
)

__all__ = ["PolicyGradientKeys", "PolicyGradientLossBase"]

_REDUCTIONS = ("none", "mean", "sum")
_CRITIC_LOSSES = ("l1", "l2", "smooth_l1")
_TORCHRL_ESTIMATORS = (ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda, ValueEstimators.GAE)


@dataclass
class PolicyGradientKeys:
    """Configurable tensordict keys shared by every pg-extras loss and advantage module (``set_keys``).

    Each loss and advantage module has a nested ``_AcceptedKeys`` that extends this one.

    Attributes:
        advantage (NestedKey): the advantage. Defaults to ``"advantage"``.
        value_target (NestedKey): the critic's regression target. Defaults to ``"value_target"``.
        value (NestedKey): the critic's output ``V(s)``. Defaults to ``"state_value"``.
        sample_log_prob (NestedKey): ``log pi_old(a|s)`` stored at collection. Defaults to the actor's log-prob key
            (``"action_log_prob"``).
        action (NestedKey): the stored action. Defaults to ``"action"``.
        reward (NestedKey): reward, under ``"next"``. Defaults to ``"reward"``.
        done (NestedKey): end-of-episode flag, under ``"next"``. Defaults to ``"done"``.
        terminated (NestedKey): true terminal state, under ``"next"``. Defaults to ``"terminated"``.
        truncated (NestedKey): time-limit end, under ``"next"``. Defaults to ``"truncated"``.
    """

    advantage: NestedKey = "advantage"
    value_target: NestedKey = "value_target"
    value: NestedKey = "state_value"
    sample_log_prob: NestedKey = "action_log_prob"
    action: NestedKey = "action"
    reward: NestedKey = "reward"
    done: NestedKey = "done"
    terminated: NestedKey = "terminated"
    truncated: NestedKey = "truncated"


def _valid_only(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` with its invalid (padding) steps set to 0: the core functions then see finite values only."""
    return x if mask is None else torch.where(mask, x, torch.zeros_like(x))


class PolicyGradientLossBase(LossModule):
    """Shared machinery; not meant to be used directly.

    Subclasses extend ``_AcceptedKeys`` and define ``out_keys`` and ``forward``. Masks: the steps that contribute
    are those where every entry named by :attr:`loss_mask_key` is True (``"auto"``: TorchRL's ``("collector",
    "mask")`` and the value-target validity ``"shifted_valid"`` written by the advantage modules).
    """

    _AcceptedKeys = PolicyGradientKeys
    default_keys = PolicyGradientKeys
    tensor_keys: PolicyGradientKeys
    default_value_estimator = None

    actor_network: TensorDictModule
    critic_network: TensorDictModule
    actor_network_params: TensorDictParams
    critic_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    target_critic_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        critic_network: TensorDictModule | None,
        *,
        functional: bool,
        reduction: str | None,
        separate_losses: bool = False,
        loss_critic_type: str = "l2",
        critic_coeff: float = 1.0,
        entropy_coeff: float = 0.0,
    ) -> None:
        if actor_network is None:
            raise TypeError(f"{type(self).__name__} needs an actor_network (a ProbabilisticActor or similar).")
        if not hasattr(actor_network, "get_dist"):
            raise TypeError(
                f"actor_network must be a probabilistic module with get_dist (e.g. torchrl.modules.ProbabilisticActor), "
                f"got {type(actor_network).__name__}."
            )
        reduction = "mean" if reduction is None else reduction
        check_choice("reduction", reduction, _REDUCTIONS)
        check_choice("loss_critic_type", loss_critic_type, _CRITIC_LOSSES)
        critic_coeff = check_float("critic_coeff", critic_coeff, low=0.0)
        entropy_coeff = check_float("entropy_coeff", entropy_coeff, low=0.0)
        functional = check_bool("functional", functional)
        separate_losses = check_bool("separate_losses", separate_losses)
        self._functional = functional
        self._in_keys = None
        super().__init__()
        if functional:
            self.convert_to_functional(actor_network, "actor_network")
        else:
            self.actor_network = actor_network
            self.actor_network_params = None
        if critic_network is not None:
            shared = list(actor_network.parameters()) if separate_losses else None
            if functional:
                self.convert_to_functional(critic_network, "critic_network", compare_against=shared)
            else:
                self.critic_network = critic_network
                self.critic_network_params = None
        else:
            self.critic_network = None
            self.critic_network_params = None
        self.separate_losses = separate_losses
        self.reduction = reduction
        self.loss_critic_type = loss_critic_type
        device = self._default_device
        self.register_coeff_buffer("critic_coeff", float(critic_coeff), device=device)
        self.register_coeff_buffer("entropy_coeff", float(entropy_coeff), device=device)
        try:
            log_prob_keys = actor_network.log_prob_keys
            sample_keys = actor_network.dist_sample_keys
            if len(log_prob_keys) == 1 and len(sample_keys) == 1:
                self.set_keys(sample_log_prob=log_prob_keys[0], action=sample_keys[0])
        except AttributeError:
            pass

    _schedulable_buffers = frozenset({"entropy_coeff", "critic_coeff"})
    _loss_out_keys: tuple[str, ...] = ()  # the loss terms and diagnostics every call writes
    _critic_out_key = "loss_critic"
    _has_kl = False
    #: the options of the per-step objective (:class:`pg_extras.ObjectiveOptions`); each loss sets its own
    objective_options: ObjectiveOptions

    @property
    def _has_entropy(self) -> bool:
        """Live, as TorchRL's losses: ``loss.entropy_coeff = 0.01`` after construction turns the entropy term on."""
        return bool(self.entropy_coeff > 0)

    def _default_out_keys(self) -> list[str]:
        """The outputs this configuration writes (live: they follow the coefficients)."""
        keys = list(self._loss_out_keys)
        if self.critic_network is not None:
            keys += [self._critic_out_key, "explained_variance"]
        if self._has_kl:
            keys += ["loss_kl_to_ref", "kl_to_ref"]
        if self._has_entropy:
            keys += ["loss_entropy", "entropy"]
        return keys

    @property
    def out_keys(self) -> list[str]:
        """The output keys (what ``@dispatch`` returns, in order): the configuration's, unless set, as in TorchRL."""
        chosen = self.__dict__.get("_chosen_out_keys")
        return list(chosen) if chosen is not None else self._default_out_keys()

    @out_keys.setter
    def out_keys(self, values) -> None:
        if values is None:
            self.__dict__["_chosen_out_keys"] = None
            return
        values, known = list(values), self._default_out_keys()
        unknown = [v for v in values if v not in known]
        if unknown:
            raise ValueError(f"{type(self).__name__}.out_keys: {unknown} are not outputs of this loss; they are: {known}.")
        self.__dict__["_chosen_out_keys"] = values

    @property
    def functional(self) -> bool:
        return self._functional

    # -- keys -----------------------------------------------------------------------------------------
    def _set_in_keys(self) -> None:
        keys = [self.tensor_keys.action, *self.actor_network.in_keys]
        if self.critic_network is not None:
            keys += list(self.critic_network.in_keys)
        for name in ("sample_log_prob", "advantage", "value_target"):
            if hasattr(self.tensor_keys, name):
                keys.append(getattr(self.tensor_keys, name))
        self._in_keys = list(dict.fromkeys(keys))

    @property
    def in_keys(self):
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        estimator = self._value_estimator
        if estimator is not None:
            accepted = estimator._AcceptedKeys.__dataclass_fields__
            names = ("advantage", "value_target", "value", "reward", "done", "terminated", "truncated", "group_id")
            keys = {n: getattr(self.tensor_keys, n) for n in names if n in accepted and hasattr(self.tensor_keys, n)}
            estimator.set_keys(**keys)
        self._set_in_keys()

    # -- value estimators -----------------------------------------------------------------------------
    def _make_default_estimator(self, **hyperparams: Any) -> ValueEstimatorBase | None:
        return None

    def make_value_estimator(self, value_type: Any = None, **hyperparams: Any):
        """Set the advantage module used when the input has no ``advantage`` entry.

        ``value_type`` may be ``None`` (this loss's default), a :class:`~torchrl.objectives.value.ValueEstimatorBase`
        instance or subclass (e.g. :class:`~torchrl_pg_extras.MonteCarloEstimator`,
        :class:`~torchrl_pg_extras.GroupRelativeAdvantage`, :class:`~torchrl.objectives.value.GAE`), or a
        :class:`~torchrl.objectives.utils.ValueEstimators` member (TD0, TD1, TDLambda, GAE; needs a critic).
        """
        if value_type is None:
            hyperparams.pop("device", None)
            estimator = self._make_default_estimator(**hyperparams)
            if estimator is None:
                raise KeyError(self._missing_advantage_message())
            self._value_estimator = estimator
            self.value_type = type(estimator)
        elif isinstance(value_type, ValueEstimatorBase) or (
            isinstance(value_type, type) and issubclass(value_type, ValueEstimatorBase)
        ):
            if isinstance(value_type, type) and "value_network" not in hyperparams and self.critic_network is not None:
                hyperparams["value_network"] = self.critic_network
            LossModule.make_value_estimator(self, value_type, **hyperparams)
        else:
            if self.critic_network is None:
                raise ValueError(f"value_type={value_type!r} needs a critic_network; pass an advantage module instead.")
            hyperparams.pop("device", None)
            dispatch_value_estimator(self, value_type, supported=_TORCHRL_ESTIMATORS, **hyperparams)
        self._forward_value_estimator_keys()
        return self

    def _missing_advantage_message(self) -> str:
        return (
            f"{type(self).__name__}: no {self.tensor_keys.advantage!r} entry in the input and no advantage module: "
            "compute it upstream or call make_value_estimator(<advantage module>)."
        )

    def _maybe_compute_advantage(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The advantage of the input, or the value estimator's (written into ``tensordict``), checked finite."""
        owner = type(self).__name__
        mask = self._mask(tensordict)
        advantage = tensordict.get(self.tensor_keys.advantage, default=None)
        if advantage is None:
            estimator = self.value_estimator
            self._check_estimator_inputs(estimator, tensordict)
            reward_key = ("next", self.tensor_keys.reward)
            reward = tensordict.get(reward_key)
            check_finite(
                f"the reward {reward_key!r}",
                reward,
                "check the environment (and rescale large rewards, e.g. with torchrl.envs.RewardScaling).",
                mask=mask,
                owner=owner,
            )
            work = tensordict
            if not reward.is_floating_point():  # integer rewards: the estimators work in floating point
                work = tensordict.clone(False).set(reward_key, reward.to(torch.get_default_dtype()))
            check_time_ordered(tensordict, self.tensor_keys.done, time_dim(tensordict, owner=estimator), owner)
            params = None
            if self.functional and self.critic_network is not None:
                params = self.critic_network_params.detach()
            estimator(work, params=params)
            if work is not tensordict:
                tensordict.update(work.select(*(set(work.keys(True, True)) - set(tensordict.keys(True, True)))))
            mask = self._mask(tensordict)  # the estimator may have written a validity mask
            advantage = get_required(tensordict, self.tensor_keys.advantage, "advantage", owner)
        check_finite(
            f"the advantage {self.tensor_keys.advantage!r}",
            advantage,
            "check the rewards and the critic (rescale large rewards, e.g. with torchrl.envs.RewardScaling).",
            mask=mask,
            owner=owner,
        )
        return advantage

    def _check_estimator_inputs(self, estimator: ValueEstimatorBase, tensordict: TensorDictBase) -> None:
        """A missing input of the advantage module raises an error that names it, not one from deep inside."""
        optional = {("next", self.tensor_keys.terminated), ("next", self.tensor_keys.truncated)}
        present = set(tensordict.keys(True, True))
        for key in estimator.in_keys:
            key = key if isinstance(key, str) else tuple(key)
            if key in optional or key in present:
                continue
            hint = ""
            signals = {("next", self.tensor_keys.reward), ("next", self.tensor_keys.done)}
            if isinstance(key, tuple) and key[0] == "next" and key not in signals:
                hint = " (it bootstraps from V(next state): keep the collector's ('next', ...) observations)"
            raise KeyError(
                f"{type(self).__name__}: the input has no {key!r} entry, which the advantage module "
                f"{type(estimator).__name__} needs{hint}. Write it upstream, rename it with set_keys(...), or pass the "
                "advantage yourself."
            )

    def compute_advantage(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the advantage (and value target) into ``tensordict`` in place, if it has none; returns it."""
        self._maybe_compute_advantage(tensordict)
        return tensordict

    # -- networks -------------------------------------------------------------------------------------
    def _actor_params(self) -> TensorDictBase | None:
        return self.actor_network_params if self.functional else None

    def actor_parameters(self) -> list[torch.nn.Parameter]:
        """The actor's trainable parameters (those a policy update moves)."""
        if self.functional:
            return [p for p in self.actor_network_params.values(True, True) if isinstance(p, torch.Tensor) and p.requires_grad]
        return [p for p in self.actor_network.parameters() if p.requires_grad]

    def critic_parameters(self) -> list[torch.nn.Parameter]:
        """The critic's trainable parameters (empty without a critic)."""
        if self.critic_network is None:
            return []
        if self.functional:
            return [
                p for p in self.critic_network_params.values(True, True) if isinstance(p, torch.Tensor) and p.requires_grad
            ]
        return [p for p in self.critic_network.parameters() if p.requires_grad]

    def _dist(self, tensordict: TensorDictBase, params: TensorDictBase | None = None):
        """The actor's distribution on ``tensordict``, computed on a shallow copy: an actor whose modules write the
        action key (TorchRL's ``gSDEModule`` writes ``mu + noise``) must not replace the stored action the loss
        evaluates."""
        params = self._actor_params() if params is None else params
        with actor_context(self.actor_network, params):
            return self.actor_network.get_dist(tensordict.copy())

    def _log_prob(self, dist, tensordict: TensorDictBase, mask: torch.Tensor | None) -> torch.Tensor:
        """Log-probability of the stored actions under ``dist``, checked finite on the valid steps."""
        owner = type(self).__name__
        log_prob = log_prob_of(dist, tensordict, self.tensor_keys.action, owner)
        check_finite(
            "the log-probability of the stored actions",
            log_prob.detach(),
            "check the actor's parameters (NaN after a diverged update?) and that the actions are in its support.",
            mask=mask,
            owner=owner,
        )
        return _valid_only(log_prob, mask)

    def _old_log_prob(self, tensordict: TensorDictBase, mask: torch.Tensor | None) -> torch.Tensor:
        """The behaviour log-probability stored at collection, checked finite on the valid steps."""
        owner = type(self).__name__
        old = get_required(tensordict, self.tensor_keys.sample_log_prob, "sample_log_prob", owner)
        if old.requires_grad:
            raise RuntimeError(f"{owner}: the stored {self.tensor_keys.sample_log_prob!r} requires grad.")
        old = as_batch(old, tensordict.batch_size, "sample_log_prob")
        check_finite(
            f"the behaviour log-probability {self.tensor_keys.sample_log_prob!r}",
            old,
            "the stored actions must be possible under the policy that collected them (check the collector's policy "
            "and set_keys(sample_log_prob=...)).",
            mask=mask,
            owner=owner,
        )
        return _valid_only(old, mask)

    def _entropy(self, dist, tensordict: TensorDictBase) -> torch.Tensor:
        return entropy_of(dist, tensordict.batch_size)

    def _policy_terms(self, dist, tensordict: TensorDictBase, log_prob, old_log_prob, advantage, **kwargs) -> ObjectiveTerms:
        """:func:`pg_extras.policy_objective` with this loss's ``objective_options`` and live ``entropy_coeff`` (the
        entropy computed only when a term needs it); ``kwargs``: the other arguments of the call."""
        return policy_objective(
            self.objective_options,
            log_prob,
            old_log_prob,
            advantage,
            ent_coef=float(self.entropy_coeff),
            entropy=lambda: self._entropy(dist, tensordict),
            **kwargs,
        )

    def _mask(self, tensordict: TensorDictBase) -> torch.Tensor | None:
        """The valid steps (``None`` when every step is valid: no masking work to differentiate through)."""
        mask = gather_mask(tensordict, self._loss_mask_keys())
        return None if mask is None or bool(mask.all()) else mask

    def _advantage(self, tensordict: TensorDictBase, normalize: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(advantage [*B], valid-step mask or None)``: computed if missing, padding zeroed, optionally standardised."""
        advantage = self._maybe_compute_advantage(tensordict)
        mask = self._mask(tensordict)  # after the estimator, which may have written its validity mask
        adv = _valid_only(as_batch(advantage, tensordict.batch_size, "advantage").detach(), mask)
        return (standardize(adv, mask) if normalize else adv), mask

    def _mean(self, x: torch.Tensor, tensordict: TensorDictBase) -> torch.Tensor:
        """Mean of a per-step diagnostic over the valid steps (``LossModule._reduce_loss``; 0 when none is valid)."""
        return self._reduce_loss(x.detach(), tensordict, reduction="mean")

    # -- critic ---------------------------------------------------------------------------------------
    def _critic_loss(self, tensordict: TensorDictBase, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step critic loss ``critic_coeff * d(V(s_t), value_target)`` and the explained variance."""
        owner = type(self).__name__
        target = get_required(tensordict, self.tensor_keys.value_target, "value_target", owner)
        if self.separate_losses:
            tensordict = tensordict.detach()
        params = self.critic_network_params if self.functional else None
        with actor_context(self.critic_network, params):
            out = self.critic_network(tensordict.select(*self.critic_network.in_keys, strict=False))
        value = get_required(out, self.tensor_keys.value, "value", owner)
        shape = tensordict.batch_size
        target = as_batch(target, shape, "value_target").detach().to(value.dtype)
        value = as_batch(value, shape, "value")
        check_finite(
            f"the value target {self.tensor_keys.value_target!r}",
            target,
            "check the rewards (rescale large ones, e.g. with torchrl.envs.RewardScaling).",
            mask=mask,
            owner=owner,
        )
        loss = distance_loss(target, value, loss_function=self.loss_critic_type) * self.critic_coeff
        valid = value.numel() if mask is None else int(mask.sum())
        ev = explained_variance(value, target, mask) if valid else 0.0  # an empty batch: finite, nothing explained
        return loss, torch.tensor(ev, dtype=value.dtype, device=value.device)

    def loss_critic(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The reduced critic loss alone (computes the advantage / value target first if missing)."""
        if self.critic_network is None:
            raise RuntimeError(f"{type(self).__name__} has no critic_network.")
        tensordict = tensordict.clone(False)
        self._maybe_compute_advantage(tensordict)
        loss, _ = self._critic_loss(tensordict, self._mask(tensordict))
        return self._reduce_loss(loss, tensordict)

    def _empty_output(self) -> TensorDict:
        """The outputs of an empty batch (``[B, 0]`` or ``[0, T]``): every loss term 0 with a graph to the parameters
        (``backward()`` works and gives zero gradients), every diagnostic 0."""
        params = [p for p in self.parameters() if p.requires_grad]
        device = params[0].device if params else torch.device("cpu")
        anchor = sum((p.sum() * 0.0 for p in params), torch.zeros((), device=device))
        zero = torch.zeros((), device=device)
        return self._out({k: anchor if k.startswith("loss_") else zero for k in self._default_out_keys()})

    def set_keys(self, **kwargs) -> None:
        """TorchRL's ``set_keys``; an unknown name is refused with the list of valid ones."""
        check_key_names(self, kwargs)
        super().set_keys(**kwargs)

    @staticmethod
    def _out(values: dict[str, torch.Tensor]) -> TensorDict:
        return TensorDict(values, batch_size=[])
