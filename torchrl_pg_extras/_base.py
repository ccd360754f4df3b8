"""Common base of the pg-extras TorchRL losses: functional networks, masks, reductions, value estimators."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from torchrl.objectives import LossModule
from torchrl.objectives.utils import ValueEstimators, dispatch_value_estimator, distance_loss
from torchrl.objectives.value import ValueEstimatorBase

from pg_extras import group_normalize
from torchrl_pg_extras._utils import (
    actor_context,
    as_batch,
    check_coeff,
    entropy_of,
    gather_mask,
    get_required,
    log_prob_of,
    masked_mean,
)

__all__ = ["PolicyGradientLossBase"]

_REDUCTIONS = ("none", "mean", "sum")
_CRITIC_LOSSES = ("l1", "l2", "smooth_l1")
_TORCHRL_ESTIMATORS = (ValueEstimators.TD0, ValueEstimators.TD1, ValueEstimators.TDLambda, ValueEstimators.GAE)


class PolicyGradientLossBase(LossModule):
    """Shared machinery; not meant to be used directly.

    Subclasses define ``_AcceptedKeys``, ``out_keys`` and ``forward``. Masks: the steps that contribute are those
    where every entry named by :attr:`loss_mask_key` is True (``"auto"``: TorchRL's ``("collector", "mask")`` and
    the value-target validity ``"shifted_valid"`` written by the advantage modules).
    """

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
        if reduction not in _REDUCTIONS:
            raise ValueError(f"Unknown reduction={reduction!r}: use one of 'none', 'mean', 'sum'.")
        if loss_critic_type not in _CRITIC_LOSSES:
            raise ValueError(f"Unknown loss_critic_type={loss_critic_type!r}: use one of 'l1', 'l2', 'smooth_l1'.")
        check_coeff("critic_coeff", critic_coeff)
        check_coeff("entropy_coeff", entropy_coeff)
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
        advantage = tensordict.get(self.tensor_keys.advantage, default=None)
        if advantage is None:
            params = None
            if self.functional and self.critic_network is not None:
                params = self.critic_network_params.detach()
            self.value_estimator(tensordict, params=params)
            advantage = get_required(tensordict, self.tensor_keys.advantage, "advantage", type(self).__name__)
        return advantage

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
        params = self._actor_params() if params is None else params
        with actor_context(self.actor_network, params):
            return self.actor_network.get_dist(tensordict)

    def _log_prob(self, dist, tensordict: TensorDictBase) -> torch.Tensor:
        return log_prob_of(dist, tensordict, self.tensor_keys.action, type(self).__name__)

    def _old_log_prob(self, tensordict: TensorDictBase) -> torch.Tensor:
        old = get_required(tensordict, self.tensor_keys.sample_log_prob, "sample_log_prob", type(self).__name__)
        if old.requires_grad:
            raise RuntimeError(f"{type(self).__name__}: the stored {self.tensor_keys.sample_log_prob!r} requires grad.")
        return as_batch(old, tensordict.batch_size, "sample_log_prob")

    def _entropy(self, dist, tensordict: TensorDictBase) -> torch.Tensor:
        return entropy_of(dist, tensordict.batch_size)

    def _mask(self, tensordict: TensorDictBase) -> torch.Tensor | None:
        return gather_mask(tensordict, self._loss_mask_keys())

    def _advantage(self, tensordict: TensorDictBase, mask: torch.Tensor | None, normalize: bool) -> torch.Tensor:
        adv = as_batch(self._maybe_compute_advantage(tensordict), tensordict.batch_size, "advantage").detach()
        if normalize:
            flat = adv.reshape(-1)
            valid = None if mask is None else mask.reshape(-1)
            adv, _ = group_normalize(flat, torch.zeros_like(flat, dtype=torch.int64), valid, scale="group")
            adv = adv.reshape(tensordict.batch_size)
        return adv

    # -- reductions -----------------------------------------------------------------------------------
    def _reduce(self, loss: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is not None:
            loss = torch.where(mask, loss, torch.zeros_like(loss))
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        return loss.mean() if mask is None else loss.sum() / mask.sum().clamp(min=1)

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
        loss = distance_loss(target, value, loss_function=self.loss_critic_type) * self.critic_coeff
        with torch.no_grad():
            resid = masked_mean((target - value) ** 2, mask) - masked_mean(target - value, mask) ** 2
            total = masked_mean(target**2, mask) - masked_mean(target, mask) ** 2
            explained_variance = 1.0 - resid / total.clamp(min=torch.finfo(total.dtype).eps)
        return loss, explained_variance

    def loss_critic(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The reduced critic loss alone (computes the advantage / value target first if missing)."""
        if self.critic_network is None:
            raise RuntimeError(f"{type(self).__name__} has no critic_network.")
        tensordict = tensordict.clone(False)
        self._maybe_compute_advantage(tensordict)
        mask = self._mask(tensordict)
        loss, _ = self._critic_loss(tensordict, mask)
        return self._reduce(loss, mask)

    @staticmethod
    def _out(values: dict[str, torch.Tensor]) -> TensorDict:
        return TensorDict(values, batch_size=[])
