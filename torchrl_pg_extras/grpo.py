"""GRPO for any environment (docs/maths.md#6-grpo; DeepSeekMath; DAPO; Dr. GRPO) as a TorchRL loss module."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, dispatch
from tensordict.utils import NestedKey

from pg_extras import (
    KL_ESTIMATORS,
    LOSS_AGGREGATIONS,
    EpisodeLayout,
    aggregate_loss,
    kl_estimate,
    mix_parameters_,
    policy_loss,
    ratio_rule_options,
    regularized_loss,
)
from pg_extras.validation import check_bool, check_choice, check_float, check_int
from torchrl_pg_extras._base import PolicyGradientLossBase
from torchrl_pg_extras._utils import get_required, time_dim, to_time_major

__all__ = ["GRPOLoss"]


class GRPOLoss(PolicyGradientLossBase):
    """Critic-free GRPO loss for discrete and continuous control (not only LLMs).

    Per step ``t`` of episode ``i`` (docs/design.md "GRPO"), GRPO's objective from the core, kept as separate ``loss_*``
    terms as TorchRL losses do:

    * ``loss_objective``: PPO-clip on the per-step ratio ``rho = exp(log pi(a|s) - log pi_old(a|s))`` with a low and
      an optional high clip (DAPO clip-higher): ``-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)``
      (:func:`pg_extras.policy_loss` with the ``"ppo_clip"`` rule);
    * ``loss_kl_to_ref``: ``kl_coeff * KL(pi || pi_ref)`` with the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``
      against a frozen reference actor (a snapshot of the initial actor, refreshed by :meth:`update_reference`);
    * ``loss_entropy``: ``-entropy_coeff * H(pi(.|s))`` (both from :func:`pg_extras.regularized_loss`).

    Any advantage module plugs in (PPO-clip with :class:`~torchrl_pg_extras.MonteCarloEstimator` works as well); a
    behaviour log-probability that is NaN or infinite on a valid step raises ``ValueError`` before any update.

    ``A`` is a group-relative advantage (:class:`~torchrl_pg_extras.GroupRelativeAdvantage`), read from the input
    or computed by the advantage module set with :meth:`make_value_estimator`. With ``reduction="mean"`` the
    per-step terms are aggregated over variable-length episodes by ``loss_aggregation``
    (:func:`pg_extras.aggregate_loss`): ``"grpo"`` (mean over each episode's steps, then over episodes),
    ``"bnpo"`` / ``"dapo"`` (mean over all valid steps), ``"dr_grpo"`` (sum over valid steps divided by
    ``num_episodes * max_length``). Episodes are delimited by ``("next", "done")``; only valid steps (collector
    mask, ``shifted_valid``) count.

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy; its log-prob key is read as ``pi_old``.

    Keyword Args:
        clip_epsilon (float): low clip ``eps_low``. Defaults to ``0.2``.
        clip_epsilon_high (float, optional): high clip ``eps_high`` (DAPO uses 0.28). ``None``: ``clip_epsilon``.
        kl_coeff (float): ``beta``, weight of the KL to the reference actor. ``0`` (default) skips the reference
            forward pass entirely.
        entropy_coeff (float): entropy bonus weight. Defaults to ``0.0``.
        loss_aggregation (str): ``"grpo"`` (default), ``"bnpo"``, ``"dapo"`` or ``"dr_grpo"``.
        update_rule (str): ``"ppo_clip"`` (default), ``"cispo"`` (MiniMax-M1) or ``"sapo"`` (soft gate); the SB3
            ``GRPO(update_rule=...)`` options, docs/maths.md section 12.
        delta (float, optional): two-sided clip (INTELLECT-2, TRL ``delta``): cap of the unclipped ratio, > 1.
        clip_ratio_c (float, optional): dual clip (verl ``clip_ratio_c``), > 1.
        sapo_temperature_pos (float): SAPO temperature where the advantage is positive. Defaults to 1.0.
        sapo_temperature_neg (float): SAPO temperature where it is not. Defaults to 1.05.
        kl_estimator (str): ``"k3"`` (default), ``"k1"``, ``"k2"`` or ``"k3+"`` (k3's value, k2's gradient).
        use_bias_correction_kl (bool): multiply the KL by the importance ratio (TRL). Defaults to ``False``.
        max_length (int, optional): Dr. GRPO's constant ``max_length`` (default: the padded length of the batch).
        functional (bool): functionalise the actor (TorchRL convention). Defaults to ``True``.
        reduction (str): ``"mean"`` (default: ``loss_aggregation``), ``"sum"`` (sum over valid steps) or
            ``"none"`` (per-step terms, masked steps 0).

    Outputs: ``loss_objective``, ``clip_fraction``, ``kl_approx`` (k3 estimate of ``KL(pi_old || pi)``),
    ``loss_kl_to_ref`` and ``kl_to_ref`` (when ``kl_coeff > 0``), ``loss_entropy`` and ``entropy`` (when
    ``entropy_coeff > 0``).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.modules import ProbabilisticActor
        >>> from torchrl_pg_extras import GRPOLoss, GroupRelativeAdvantage
        >>> actor = ProbabilisticActor(TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
        ...                            in_keys=["logits"], distribution_class=torch.distributions.Categorical,
        ...                            return_log_prob=True)
        >>> done = torch.tensor([[False, True], [True, False]]).unsqueeze(-1)
        >>> data = TensorDict({"observation": torch.randn(2, 2, 3), "next": {"reward": torch.rand(2, 2, 1),
        ...                    "done": done, "terminated": done}, "group_id": torch.zeros(2, 2, 1, dtype=torch.long),
        ...                    "collector": {"mask": torch.tensor([[True, True], [True, False]])}}, [2, 2])
        >>> with torch.no_grad():
        ...     data = actor(data)  # samples "action" and writes "action_log_prob"
        >>> loss = GRPOLoss(actor, kl_coeff=0.04, clip_epsilon_high=0.28)
        >>> loss.make_value_estimator(GroupRelativeAdvantage(group_size=2))  # doctest: +ELLIPSIS
        GRPOLoss(...)
        >>> out = loss(data)
        >>> (out["loss_objective"] + out["loss_kl_to_ref"]).backward()
        >>> loss.update_reference()  # refresh pi_ref, e.g. every few hundred updates
    """

    @dataclass
    class _AcceptedKeys(PolicyGradientLossBase._AcceptedKeys):
        """Configurable tensordict keys (``set_keys``): those of
        :class:`~torchrl_pg_extras._base.PolicyGradientKeys` plus

        Attributes:
            group_id (NestedKey): group label (for the advantage module). Defaults to ``"group_id"``.
        """

        group_id: NestedKey = "group_id"

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys
    _schedulable_buffers = frozenset({"entropy_coeff", "kl_coeff"})

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        *,
        clip_epsilon: float = 0.2,
        clip_epsilon_high: float | None = None,
        kl_coeff: float = 0.0,
        entropy_coeff: float = 0.0,
        loss_aggregation: str = "grpo",
        max_length: int | None = None,
        kl_estimator: str = "k3",
        use_bias_correction_kl: bool = False,
        update_rule: str = "ppo_clip",
        delta: float | None = None,
        clip_ratio_c: float | None = None,
        sapo_temperature_pos: float = 1.0,
        sapo_temperature_neg: float = 1.05,
        functional: bool = True,
        reduction: str | None = None,
    ) -> None:
        clip_epsilon = check_float("clip_epsilon", clip_epsilon, low=0.0, hint="e.g. 0.2")
        clip_epsilon_high = check_float("clip_epsilon_high", clip_epsilon_high, low=0.0, allow_none=True, hint="e.g. 0.28")
        kl_coeff = check_float("kl_coeff", kl_coeff, low=0.0, hint="beta, e.g. 0.04")
        check_choice("loss_aggregation", loss_aggregation, LOSS_AGGREGATIONS)
        max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
        super().__init__(actor_network, None, functional=functional, reduction=reduction, entropy_coeff=entropy_coeff)
        self.clip_epsilon = float(clip_epsilon)
        self.clip_epsilon_high = None if clip_epsilon_high is None else float(clip_epsilon_high)
        self.loss_aggregation = loss_aggregation
        self.max_length = max_length
        self.update_rule = update_rule
        self.rule_options = ratio_rule_options(update_rule, delta, clip_ratio_c, sapo_temperature_pos, sapo_temperature_neg)
        self.kl_estimator = check_choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
        self.use_bias_correction_kl = check_bool("use_bias_correction_kl", use_bias_correction_kl)
        self.register_coeff_buffer("kl_coeff", float(kl_coeff), device=self._default_device)
        self._has_kl = float(kl_coeff) > 0
        self.reference_actor_network_params = TensorDictParams(self._current_actor_params().data.clone(), no_convert=True)

    _loss_out_keys = ("loss_objective", "clip_fraction", "kl_approx")

    def _current_actor_params(self) -> TensorDictBase:
        if self.functional:
            return self.actor_network_params
        return TensorDict.from_module(self.actor_network)

    @torch.no_grad()
    def update_reference(self, alpha: float = 1.0) -> None:
        """``pi_ref <- alpha * pi + (1 - alpha) * pi_ref`` (TR-DPO mixing; ``alpha=1``: copy the current actor)."""
        ref = self.reference_actor_network_params.data
        current = self._current_actor_params().data
        keys = sorted(ref.keys(include_nested=True, leaves_only=True))
        mix_parameters_([ref.get(k) for k in keys], [current.get(k) for k in keys], alpha)

    def _missing_advantage_message(self) -> str:
        return (
            f"GRPOLoss: no {self.tensor_keys.advantage!r} entry in the input. GRPO has no critic: compute the advantage "
            "with torchrl_pg_extras.GroupRelativeAdvantage(...)(data) or call "
            "loss.make_value_estimator(GroupRelativeAdvantage(group_size=...))."
        )

    def _episode_aggregator(self, tensordict: TensorDictBase, mask: torch.Tensor | None, device: torch.device):
        """Return ``x [*B, T] -> scalar`` that applies ``loss_aggregation`` over the valid steps (0 when none is)."""
        shape = tensordict.batch_size
        valid = torch.ones(shape, dtype=torch.bool, device=device) if mask is None else mask
        if not bool(valid.any()):  # an all-padding batch: no step to average over, and no gradient
            return lambda x: torch.where(valid, x, torch.zeros_like(x)).sum()
        if self.loss_aggregation in ("bnpo", "dapo") or tensordict.batch_dims == 0:
            return lambda x: aggregate_loss(x.reshape(-1), valid.reshape(-1), self.loss_aggregation)
        tdim = time_dim(tensordict, owner=self)
        done = get_required(tensordict, ("next", self.tensor_keys.done), "done", "GRPOLoss")
        layout = EpisodeLayout.from_dones(to_time_major(done, shape, tdim, "done"))
        ep_mask = layout.mask & layout.to_episodes(to_time_major(valid, shape, tdim, "mask"), fill=False)
        keep = ep_mask.any(1)
        ep_mask = ep_mask[keep]

        def aggregate(x: torch.Tensor) -> torch.Tensor:
            x_e = layout.to_episodes(to_time_major(x, shape, tdim))[keep]
            return aggregate_loss(x_e, ep_mask, self.loss_aggregation, self.max_length)

        return aggregate

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = tensordict.clone(False)
        advantage, mask = self._advantage(tensordict, False)
        dist = self._dist(tensordict)
        log_prob = self._log_prob(dist, tensordict, mask)
        old_log_prob = self._old_log_prob(tensordict, mask).to(log_prob.dtype)
        # GRPO's per-step objective (pg_extras.policy_loss + pg_extras.regularized_loss), kept as separate loss_* terms
        objective, clipped = policy_loss(
            self.update_rule, log_prob, old_log_prob, advantage, self.clip_epsilon, self.clip_epsilon_high, **self.rule_options
        )
        terms = {"loss_objective": objective}
        diagnostics = {
            "clip_fraction": self._mean(clipped.to(log_prob.dtype), tensordict),
            "kl_approx": self._mean(kl_estimate(old_log_prob, log_prob.detach(), "k3"), tensordict),
        }
        if self._has_kl:
            with torch.no_grad():
                ref_log_prob = self._log_prob(self._dist(tensordict, self.reference_actor_network_params), tensordict, mask)
            terms["loss_kl_to_ref"], kl = regularized_loss(
                torch.zeros_like(log_prob),
                log_prob,
                ref_log_prob,
                beta=self.kl_coeff,
                kl_estimator=self.kl_estimator,
                old_log_prob=old_log_prob,
                use_bias_correction_kl=self.use_bias_correction_kl,
            )
            diagnostics["kl_to_ref"] = self._mean(kl, tensordict)
        if self._has_entropy:
            entropy = self._entropy(dist, tensordict)
            terms["loss_entropy"] = self._entropy_term(entropy)
            diagnostics["entropy"] = self._mean(entropy, tensordict)
        if self.reduction == "mean":
            aggregate = self._episode_aggregator(tensordict, mask, log_prob.device)
            terms = {k: aggregate(v) for k, v in terms.items()}
        else:
            terms = {k: self._reduce_loss(v, tensordict) for k, v in terms.items()}
        return self._out({**terms, **diagnostics})
