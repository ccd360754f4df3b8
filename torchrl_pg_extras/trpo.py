"""TRPO (docs/maths.md §4; Schulman et al. 2015) as a TorchRL loss module plus a trust-region update and a Trainer stepper."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, dispatch
from torchrl.objectives.value import GAE
from torchrl.trainers import OptimizationStepper

from pg_extras import (
    DEFAULT_KL_REDUCTION,
    KL_REDUCTIONS,
    ObjectiveOptions,
    TrustRegionSettings,
    action_kl,
    distribution_fisher,
    gauss_newton_fvp_fn,
    mlp_fvp_fn,
    trust_region_surrogate,
)
from pg_extras.validation import check_bool, check_choice, check_float, check_int
from torchrl_pg_extras._base import PolicyGradientLossBase, _valid_only
from torchrl_pg_extras._utils import actor_context, deprecated_discount, log_prob_of

__all__ = ["TRPOLoss", "TRPOStepper"]

_NOT_A_GRADIENT_LOSS = (
    "TRPOLoss: {key} was backpropagated into the actor. TRPO's policy update is not a gradient step on the "
    "surrogate (an optimizer on it is an unclipped multi-epoch policy gradient, with no trust region): move the actor "
    "with loss.trust_region_step(batch), once per collected batch, and backpropagate loss_critic alone for the "
    "critic (TRPOStepper does both; under a Trainer pass optimization_stepper=TRPOStepper(...)). The surrogate's "
    "gradient itself is pg_extras.trust_region_surrogate."
)


class _TrustRegionOnly(torch.autograd.Function):
    """Identity whose backward refuses: the actor terms of :class:`TRPOLoss` are reported, not descended."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, key: str) -> torch.Tensor:  # type: ignore[override]
        ctx.key = key
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        raise RuntimeError(_NOT_A_GRADIENT_LOSS.format(key=ctx.key))


def _report_only(x: torch.Tensor, key: str, differentiable: bool) -> torch.Tensor:
    return _TrustRegionOnly.apply(x, key) if x.requires_grad and not differentiable else x


class TRPOLoss(PolicyGradientLossBase):
    """Trust Region Policy Optimization: surrogate, KL and critic loss, and the trust-region policy update.

    TRPO maximises the importance-ratio surrogate ``E[pi(a|s) / pi_old(a|s) A]`` subject to
    ``KL(pi_old || pi) <= max_kl`` (docs/maths.md §4). The constrained step is not a gradient step, so it is exposed as
    :meth:`trust_region_step` (conjugate gradient on Fisher-vector products, step ``sqrt(2 delta / x^T F x) x``,
    backtracking line search that accepts only an improving step inside the KL bound and otherwise restores the
    parameters: :func:`pg_extras.trust_region_step`). The critic is trained separately by gradient descent on
    ``loss_critic``, which never touches actor parameters. :class:`TRPOStepper` wires both into a TorchRL
    :class:`~torchrl.trainers.Trainer`.

    ``forward`` returns, like any TorchRL loss, ``loss_objective`` (``-ratio * A``), ``loss_critic``, and the
    diagnostics ``kl_approx`` (k3 estimate of ``KL(pi_old || pi)`` from the stored log-probs), ``entropy`` (when
    ``entropy_coeff > 0``, with ``loss_entropy``) and ``explained_variance``.

    The loop (docs/design.md#torchrl-trpo-loop): one :meth:`trust_region_step` per collected batch, on the whole batch
    in time order, then minibatches of ``loss_critic`` for the critic. What another loop shape would do wrong is
    refused with the fix: backpropagating ``loss_objective`` or ``loss_entropy`` into the actor (they are reported,
    not minimised), a trust-region step from a policy that is no longer the one that collected the batch (a second
    step on the same data, e.g. one per minibatch; ``on_policy_tolerance``), and an advantage computed on a batch
    that is not in time order (shuffled or flattened replay-buffer samples).

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy; its log-prob key is read as ``pi_old``.
        critic_network (TensorDictModule, optional): ``V(s)``. ``None`` gives a critic-free TRPO whose advantage
            comes from the input or from an advantage module (e.g. :class:`~torchrl_pg_extras.GroupRelativeAdvantage`).

    Keyword Args:
        max_kl (float): trust-region radius ``delta``. Defaults to ``0.01``.
        cg_max_steps (int): conjugate-gradient iterations. Defaults to ``15``.
        cg_damping (float): damping added to the Fisher-vector products. Defaults to ``0.1``.
        line_search_shrinking_factor (float): backtracking factor in (0, 1). Defaults to ``0.8``.
        line_search_max_iter (int): backtracking tries. Defaults to ``10``.
        kl_samples (int): Monte-Carlo samples for the KL of distributions without a closed form (0: raise).
            Defaults to ``16``.
        kl_reduction (str): how the KL reduces over the action dimensions: ``"mean"`` (sb3-contrib's convention: the
            per-dimension KLs of a Box / MultiBinary action are averaged) or ``"joint"`` (summed: the exact KL of the
            joint distribution, ``"mean"`` times the action dimension for a diagonal Gaussian;
            docs/maths.md#kl-reduction). Defaults to ``"mean"``, as SB3's ``TRPO`` and the core.
        normalize_advantage (bool): standardise the advantage over the valid steps (as sb3-contrib).
            Defaults to ``True``.
        gamma, lmbda (float): deprecated, as in TorchRL's own losses: pass them to the estimator instead,
            ``loss.make_value_estimator(gamma=0.99, lmbda=0.95)`` (the default GAE's values, ``0.99`` and ``0.95``).
        entropy_coeff (float): entropy weight in ``loss_entropy`` (reported only; the trust-region step maximises the
            surrogate). Defaults to ``0.0``.
        critic_coeff (float): weight of ``loss_critic``. Defaults to ``1.0``.
        loss_critic_type (str): ``"l2"`` (default), ``"l1"`` or ``"smooth_l1"``.
        functional (bool): functionalise the networks. Defaults to ``True``.
        reduction (str): ``"mean"`` (default), ``"sum"`` or ``"none"``.
        on_policy_tolerance (float, optional): :meth:`trust_region_step` refuses a batch on which the actor's
            log-probabilities of the stored actions differ from the stored ``sample_log_prob`` by more than this, in
            mean absolute value over the valid steps (the actor is not the collecting policy: TRPO's step and its
            trust region start from that policy). ``None``: no check (e.g. a collector whose weights lag on purpose).
            Defaults to ``1e-3``.
        differentiable_objective (bool): ``True``: ``loss_objective`` and ``loss_entropy`` carry the actor's
            gradient (for an update rule of your own); ``False``: they are reported, and backpropagating them into the
            actor raises with the right loop. Defaults to ``False``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.modules import ProbabilisticActor, ValueOperator
        >>> from torchrl_pg_extras import TRPOLoss
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> actor = ProbabilisticActor(TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
        ...                            in_keys=["logits"], distribution_class=torch.distributions.Categorical,
        ...                            return_log_prob=True)
        >>> critic = ValueOperator(nn.Linear(3, 1), in_keys=["observation"])
        >>> done = torch.zeros(4, 8, 1, dtype=torch.bool)
        >>> data = TensorDict({"observation": torch.randn(4, 8, 3), "next": {"observation": torch.randn(4, 8, 3),
        ...                    "reward": torch.randn(4, 8, 1), "done": done, "terminated": done}}, [4, 8])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> loss = TRPOLoss(actor, critic, max_kl=0.01)
        >>> loss(data)["loss_critic"].backward()  # critic: ordinary gradient step
        >>> result = loss.trust_region_step(data)  # actor: constrained step
        >>> bool(result["kl"] <= 0.01)
        True
    """

    @dataclass
    class _AcceptedKeys(PolicyGradientLossBase._AcceptedKeys):
        """Configurable tensordict keys (``set_keys``): those of :class:`~torchrl_pg_extras._base.PolicyGradientKeys`."""

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        critic_network: TensorDictModule | None = None,
        *,
        max_kl: float = 0.01,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        kl_samples: int = 16,
        kl_reduction: str = DEFAULT_KL_REDUCTION,
        normalize_advantage: bool = True,
        gamma: float | None = None,
        lmbda: float | None = None,
        entropy_coeff: float = 0.0,
        critic_coeff: float = 1.0,
        loss_critic_type: str = "l2",
        functional: bool = True,
        reduction: str | None = None,
        on_policy_tolerance: float | None = 1e-3,
        differentiable_objective: bool = False,
    ) -> None:
        differentiable_objective = check_bool("differentiable_objective", differentiable_objective)
        on_policy_tolerance = check_float(
            "on_policy_tolerance", on_policy_tolerance, low=0.0, allow_none=True, hint="e.g. 1e-3, or None for no check"
        )
        max_kl = check_float("max_kl", max_kl, low=0.0, low_inclusive=False, hint="the trust-region radius, e.g. 0.01")
        cg_damping = check_float("cg_damping", cg_damping, low=0.0, hint="e.g. 0.1")
        cg_max_steps = check_int("cg_max_steps", cg_max_steps, minimum=1)
        line_search_max_iter = check_int("line_search_max_iter", line_search_max_iter, minimum=1)
        line_search_shrinking_factor = check_float(
            "line_search_shrinking_factor",
            line_search_shrinking_factor,
            low=0.0,
            high=1.0,
            low_inclusive=False,
            high_inclusive=False,
            hint="e.g. 0.8",
        )
        kl_samples = check_int("kl_samples", kl_samples, minimum=0)
        kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
        normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
        given = deprecated_discount("TRPOLoss", gamma=gamma, lmbda=lmbda)
        gamma = check_float("gamma", given.get("gamma", 0.99), low=0.0, high=1.0)
        lmbda = check_float("lmbda", given.get("lmbda", 0.95), low=0.0, high=1.0)
        if critic_network is not None:
            shared = {id(p) for p in actor_network.parameters()} & {id(p) for p in critic_network.parameters()}
            if shared:
                raise ValueError(
                    "TRPOLoss: actor_network and critic_network share parameters, so the critic update would move the "
                    "actor outside the trust region. Use separate networks for the actor and the critic."
                )
        super().__init__(
            actor_network,
            critic_network,
            functional=functional,
            reduction=reduction,
            loss_critic_type=loss_critic_type,
            critic_coeff=critic_coeff,
            entropy_coeff=entropy_coeff,
        )
        self.max_kl = float(max_kl)
        self.cg_max_steps = cg_max_steps
        self.cg_damping = float(cg_damping)
        self.line_search_shrinking_factor = float(line_search_shrinking_factor)
        self.line_search_max_iter = line_search_max_iter
        self.kl_samples = kl_samples
        self.kl_reduction = kl_reduction
        self.normalize_advantage = normalize_advantage
        self.gamma = float(gamma)
        self.lmbda = float(lmbda)
        self.on_policy_tolerance = on_policy_tolerance
        self.differentiable_objective = differentiable_objective

    _loss_out_keys = ("loss_objective", "kl_approx")
    #: the options of :func:`pg_extras.policy_objective`: the importance-ratio surrogate of the trust-region step
    objective_options = ObjectiveOptions("trust_region")
    _critic_out_key = "loss_critic"

    def _make_default_estimator(self, **hyperparams):
        if self.critic_network is None:
            return None
        hyperparams.setdefault("gamma", self.gamma)
        hyperparams.setdefault("lmbda", self.lmbda)
        return GAE(value_network=self.critic_network, **hyperparams)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_size.numel() == 0:  # an empty batch: zero losses, finite diagnostics
            return self._empty_output()
        tensordict = tensordict.clone(False)
        advantage, mask = self._advantage(tensordict, self.normalize_advantage)
        dist = self._dist(tensordict)
        log_prob = self._log_prob(dist, tensordict, mask)
        old_log_prob = self._old_log_prob(tensordict, mask).to(log_prob.dtype)
        terms = self._policy_terms(dist, tensordict, log_prob, old_log_prob, advantage)
        out = {
            "loss_objective": _report_only(
                self._reduce_loss(terms.policy, tensordict), "loss_objective", self.differentiable_objective
            ),
            "kl_approx": self._mean(terms.approx_kl, tensordict),  # type: ignore[arg-type]
        }
        if self.critic_network is not None:
            loss_critic, explained_variance = self._critic_loss(tensordict, mask)
            out["loss_critic"] = self._reduce_loss(loss_critic, tensordict)
            out["explained_variance"] = explained_variance
        if terms.entropy_bonus is not None:
            out["loss_entropy"] = _report_only(
                self._reduce_loss(terms.entropy_bonus, tensordict), "loss_entropy", self.differentiable_objective
            )
            out["entropy"] = self._mean(terms.entropy, tensordict)  # type: ignore[arg-type]
        return self._out(out)

    def trust_region_step(self, tensordict: TensorDictBase) -> TensorDictBase:
        """One TRPO policy update on ``tensordict`` (docs/maths.md §4, step 3); the actor parameters change in place.

        The advantage is read from the input or computed (and written into ``tensordict``) by the value estimator,
        with the critic as it is now: call this before updating the critic on the same batch. The surrogate is
        :func:`pg_extras.trust_region_surrogate`, the constraint :func:`pg_extras.action_kl`, the step
        :func:`pg_extras.trust_region_step` with the Gauss-Newton Fisher-vector product (:func:`pg_extras.mlp_fvp_fn`
        for an MLP policy, else :func:`pg_extras.distribution_fvp_fn`; double backward of the KL for other
        distributions).

        Returns:
            a TensorDict with ``accepted`` (bool), ``steps_tried``, ``step_fraction`` (of the maximal step),
            ``kl`` (``KL(pi_old || pi)`` after the step; 0 if rejected), ``improvement`` (surrogate gain),
            ``surrogate_before`` / ``surrogate_after`` and ``max_kl``.
        """
        if tensordict.batch_size.numel() == 0:  # an empty batch: no step, nothing changes
            zero = torch.zeros(())
            values = dict.fromkeys(("steps_tried", "step_fraction", "kl", "improvement", "surrogate_before"), zero)
            return TensorDict(
                {"accepted": torch.tensor(False), **values, "surrogate_after": zero, "max_kl": torch.tensor(self.max_kl)},
                batch_size=[],
            )
        self._maybe_compute_advantage(tensordict)  # written into the input, as documented
        td = tensordict.clone(False)
        advantage, mask = self._advantage(td, self.normalize_advantage)
        old_log_prob = self._old_log_prob(td, mask)
        params = self.actor_parameters()
        with torch.no_grad():
            old_dist = self._dist(td)

        def objective(dist, log_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            surrogate = trust_region_surrogate(log_prob, old_log_prob.to(log_prob.dtype), advantage, mask)
            kl = action_kl(
                [old_dist], [dist], td.batch_dims, mask, num_samples=self.kl_samples, kl_reduction=self.kl_reduction
            )
            return surrogate, kl

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:  # at a trial point: non-finite values are rejected, not raised
            dist = self._dist(td)
            return objective(dist, _valid_only(log_prob_of(dist, td, self.tensor_keys.action, "TRPOLoss"), mask))

        dist = self._dist(td)  # at theta_old, with a graph: the gradient and the Fisher-vector products start here
        log_prob = self._log_prob(dist, td, mask)
        self._check_on_policy(log_prob.detach(), old_log_prob.to(log_prob.dtype), td)
        initial = objective(dist, log_prob)
        settings = TrustRegionSettings(
            self.max_kl, self.cg_max_steps, self.cg_damping, self.line_search_shrinking_factor, self.line_search_max_iter
        )
        result = settings.step(params, evaluate, fvp=self._fisher_product(td, dist, mask, params), initial=initial)
        device = advantage.device
        values = {
            "accepted": result.accepted,
            "steps_tried": result.steps_tried,
            "step_fraction": result.step_fraction,
            "kl": result.kl,
            "improvement": result.improvement,
            "surrogate_before": result.surrogate_before,
            "surrogate_after": result.surrogate_after,
            "max_kl": self.max_kl,
        }
        return TensorDict({k: torch.tensor(v, device=device) for k, v in values.items()}, batch_size=[])

    def _check_on_policy(self, log_prob: torch.Tensor, old_log_prob: torch.Tensor, td: TensorDictBase) -> None:
        """Refuse a step from an actor that is not the one that collected ``td`` (``on_policy_tolerance``)."""
        if self.on_policy_tolerance is None:
            return
        gap = float(self._mean((log_prob - old_log_prob).abs(), td))
        if gap > self.on_policy_tolerance:
            raise ValueError(
                f"TRPOLoss.trust_region_step: the actor is not the policy that collected this batch (mean "
                f"|log pi(a|s) - sample_log_prob| = {gap:.3g} > on_policy_tolerance={self.on_policy_tolerance:g}). TRPO "
                "takes one step per collected batch, from the collecting policy: call trust_region_step once on the whole "
                "batch (not once per minibatch or epoch), then train the critic on minibatches of loss_critic. If the "
                "collector's weights lag on purpose, pass on_policy_tolerance=None."
            )

    def _fisher_product(self, td: TensorDictBase, dist, mask: torch.Tensor | None, params: list[torch.Tensor]):
        """The Gauss-Newton Fisher-vector product of the mean KL at the current parameters, or ``None``."""
        fisher = distribution_fisher([dist], td.batch_dims, kl_reduction=self.kl_reduction, mask=mask)
        if fisher is None:  # e.g. TanhNormal: trust_region_step falls back to the double backward of the KL
            return None
        net, inputs = self._policy_mlp(td)
        if net is not None:
            with actor_context(self.actor_network, self._actor_params()):
                fvp = mlp_fvp_fn(net, inputs, params, fisher)
            if fvp is not None:
                return fvp
        return gauss_newton_fvp_fn(fisher[0], params, fisher[1])

    def _policy_mlp(self, td: TensorDictBase) -> tuple[list[torch.nn.Module] | None, torch.Tensor | None]:
        """The torch network that maps one input entry to the distribution parameters (``mlp_fvp_fn`` checks it)."""
        modules = getattr(self.actor_network, "module", None)
        first = modules[0] if isinstance(modules, torch.nn.ModuleList) and len(modules) else None
        if not isinstance(first, TensorDictModule) or len(first.in_keys) != 1:
            return None, None
        inputs = td.get(first.in_keys[0], default=None)
        net = first.module
        if not isinstance(inputs, torch.Tensor):
            return None, None
        return (list(net.children()) if isinstance(net, torch.nn.Sequential) else [net]), inputs


class TRPOStepper(OptimizationStepper):
    """A :class:`~torchrl.trainers.Trainer` optimization stepper for :class:`TRPOLoss`.

    Called on its own, :meth:`step` does one trust-region actor update on the batch, then ``critic_updates`` passes
    of gradient descent on ``loss_critic`` with ``critic_optimizer`` (mini-batches of ``critic_batch_size`` valid
    steps, or the whole batch). The advantage is computed before the critic moves (docs/maths.md §4).

    Registered with a :class:`~torchrl.trainers.Trainer` (``Trainer(..., optimization_stepper=stepper)``), the
    trust-region step runs once per collected batch, on the whole batch in time order, as the trainer's first
    ``"batch_process"`` op (which also writes the advantage and value target into the batch); every :meth:`step` the
    trainer then makes trains the critic only. So the loop is right with or without a
    :class:`~torchrl.trainers.ReplayBufferTrainer`, whose shuffled, flattened minibatches keep the value target
    computed on the whole batch (``critic_updates=1`` lets the trainer's ``optim_steps_per_batch`` count the passes).

    Args:
        loss_module (TRPOLoss): the loss.
        critic_optimizer (torch.optim.Optimizer, optional): optimizer over the critic parameters only
            (e.g. ``Adam(loss.critic_parameters())``); ``None`` for a critic-free TRPO.

    Keyword Args:
        critic_updates (int): passes over the sub-batch for the critic. Defaults to ``10``.
        critic_batch_size (int, optional): mini-batch size of the critic passes. ``None``: full batch.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.modules import ProbabilisticActor, ValueOperator
        >>> from torchrl_pg_extras import TRPOLoss, TRPOStepper
        >>> actor = ProbabilisticActor(TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
        ...                            in_keys=["logits"], distribution_class=torch.distributions.Categorical,
        ...                            return_log_prob=True)
        >>> loss = TRPOLoss(actor, ValueOperator(nn.Linear(3, 1), in_keys=["observation"]))
        >>> stepper = TRPOStepper(loss, torch.optim.Adam(loss.critic_parameters(), lr=1e-3), critic_updates=2)
        >>> done = torch.zeros(2, 5, 1, dtype=torch.bool)
        >>> data = TensorDict({"observation": torch.randn(2, 5, 3), "next": {"observation": torch.randn(2, 5, 3),
        ...                    "reward": torch.randn(2, 5, 1), "done": done, "terminated": done}}, [2, 5])
        >>> with torch.no_grad():
        ...     data = actor(data)
        >>> metrics = stepper.step(None, data)  # a Trainer passes itself; Trainer(..., optimization_stepper=stepper)
        >>> sorted(metrics.keys())[:3]
        ['accepted', 'improvement', 'kl']
    """

    def __init__(
        self,
        loss_module: TRPOLoss,
        critic_optimizer: torch.optim.Optimizer | None = None,
        *,
        critic_updates: int = 10,
        critic_batch_size: int | None = None,
    ) -> None:
        if not isinstance(loss_module, TRPOLoss):
            raise TypeError(f"loss_module must be a TRPOLoss, got {type(loss_module).__name__}.")
        critic_updates = check_int("critic_updates", critic_updates, minimum=0)
        critic_batch_size = check_int("critic_batch_size", critic_batch_size, minimum=1, allow_none=True)
        if loss_module.critic_network is not None and critic_optimizer is None and critic_updates > 0:
            raise ValueError("critic_optimizer is required to train the critic: pass Adam(loss.critic_parameters()).")
        actor_ids = {id(p) for p in loss_module.actor_parameters()}
        if critic_optimizer is not None:
            for group in critic_optimizer.param_groups:
                if any(id(p) in actor_ids for p in group["params"]):
                    raise ValueError("critic_optimizer holds actor parameters: build it on loss.critic_parameters() only.")
        self.loss_module = loss_module
        self.critic_optimizer = critic_optimizer
        self.critic_updates = critic_updates
        self.critic_batch_size = critic_batch_size
        self._policy_metrics: TensorDictBase | None = None  # the step policy_step took on the current batch

    def register(self, trainer, name: str = "optimization_stepper") -> None:
        """Register with a Trainer: the trust-region step becomes a ``"batch_process"`` op on each collected batch."""
        super().register(trainer, name)
        trainer.register_op("batch_process", self.policy_step)

    def policy_step(self, batch: TensorDictBase) -> TensorDictBase:
        """The trust-region step on a whole collected batch (advantage and value target written into it); the
        :meth:`step` calls that follow, on this batch or on minibatches of it, train the critic only."""
        self.loss_module.compute_advantage(batch)
        self._policy_metrics = self.loss_module.trust_region_step(batch)
        return batch

    def step(self, trainer, sub_batch: TensorDictBase) -> TensorDictBase:
        loss = self.loss_module
        metrics = self._policy_metrics
        if metrics is None:  # not under a Trainer: this batch is the collected one
            loss.compute_advantage(sub_batch)
            metrics = loss.trust_region_step(sub_batch)
        metrics = metrics.clone()
        critic_losses = []
        if loss.critic_network is not None and self.critic_optimizer is not None:
            data = sub_batch
            mask = loss._mask(sub_batch)
            if self.critic_batch_size is not None:
                data = sub_batch[mask] if mask is not None else sub_batch.reshape(-1)
            for _ in range(self.critic_updates):
                batches = [data]
                if self.critic_batch_size is not None:
                    perm = torch.randperm(data.shape[0], device=data.device)
                    batches = [data[idx] for idx in perm.split(self.critic_batch_size)]
                for batch in batches:
                    self.critic_optimizer.zero_grad(set_to_none=True)
                    value_loss = loss.loss_critic(batch)
                    if value_loss.ndim:  # reduction="none"
                        value_loss = value_loss.mean()
                    value_loss.backward()
                    self.critic_optimizer.step()
                    critic_losses.append(value_loss.detach())
        if critic_losses:
            metrics.set("loss_critic", torch.stack(critic_losses).mean())
        return metrics

    def state_dict(self) -> dict:
        return {} if self.critic_optimizer is None else {"critic_optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.critic_optimizer is not None and "critic_optimizer" in state_dict:
            self.critic_optimizer.load_state_dict(state_dict["critic_optimizer"])
