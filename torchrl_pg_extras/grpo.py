"""GRPO for any environment (docs/maths.md#6-grpo; DeepSeekMath; DAPO; Dr. GRPO) as a TorchRL loss module.

The variants of docs/maths.md#12-variants are options of :class:`GRPOLoss`, each one call into the core: the ratio
rules and bounds (:func:`pg_extras.policy_loss`), GSPO's sequence-level ratio (``importance_sampling_level``), the
truncated-episode mask (:func:`pg_extras.mask_truncated_episodes`) and the top-entropy mask
(:func:`pg_extras.top_entropy_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, dispatch
from tensordict.utils import NestedKey

from pg_extras import (
    RATIO_RULES,
    EpisodeLayout,
    ObjectiveOptionAttributes,
    ObjectiveOptions,
    aggregate_loss,
    mask_truncated_episodes,
    mix_parameters_,
)
from pg_extras.validation import check_choice, check_float, check_int
from torchrl_pg_extras._base import PolicyGradientLossBase
from torchrl_pg_extras._utils import (
    as_batch,
    end_flags,
    from_time_major,
    get_required,
    time_dim,
    to_time_major,
)
from torchrl_pg_extras.value import GroupRelativeAdvantage

__all__ = ["GRPOLoss"]


#: TorchRL ``GRPOLoss(aggregation=...)`` values -> ours: a global masked token mean is ``"bnpo"``, a mean per episode
#: then over episodes is ``"grpo"``; ``"none"`` is ``reduction="none"``.
TORCHRL_AGGREGATIONS = {"token_mean": "bnpo", "prompt_mean": "grpo", "none": "grpo"}


class GRPOLoss(ObjectiveOptionAttributes, PolicyGradientLossBase):
    """Critic-free GRPO loss for discrete and continuous control (not only LLMs).

    Per step ``t`` of episode ``i`` (docs/design.md "GRPO"), GRPO's objective from the core, kept as separate ``loss_*``
    terms as TorchRL losses do:

    * ``loss_objective``: PPO-clip on the per-step ratio ``rho = exp(log pi(a|s) - log pi_old(a|s))`` with a low and
      an optional high clip (DAPO clip-higher): ``-min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)``
      (:func:`pg_extras.policy_loss` with the ``"ppo_clip"`` rule);
    * ``loss_kl_to_ref``: ``kl_coeff * KL(pi || pi_ref)`` with the k3 estimator ``exp(ref - logp) - (ref - logp) - 1``
      against a frozen reference actor (a snapshot of the initial actor, refreshed by :meth:`update_reference`);
    * ``loss_entropy``: ``-entropy_coeff * H(pi(.|s))``;

    all three from one call of :func:`pg_extras.policy_objective` (the options in ``objective_options``, a
    :class:`pg_extras.ObjectiveOptions`; setting ``loss.update_rule`` and the other options re-checks them).

    Any advantage module plugs in (PPO-clip with :class:`~torchrl_pg_extras.MonteCarloEstimator` works as well); a
    behaviour log-probability that is NaN or infinite on a valid step raises ``ValueError`` before any update.

    ``A`` is a group-relative advantage (:class:`~torchrl_pg_extras.GroupRelativeAdvantage`), read from the input
    or computed by the advantage module set with :meth:`make_value_estimator`. Unless ``reduction`` is given the
    per-step terms are aggregated over variable-length episodes by ``loss_aggregation``
    (:func:`pg_extras.aggregate_loss`): ``"grpo"`` (mean over each episode's steps, then over episodes),
    ``"bnpo"`` / ``"dapo"`` (mean over all valid steps), ``"dr_grpo"`` (sum over valid steps divided by
    ``num_episodes * max_length``). Episodes are delimited by ``("next", "done")``; only valid steps (collector
    mask, ``shifted_valid``) count.

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy; its log-prob key is read as ``pi_old``.

    Keyword Args:
        clip_epsilon (float or tuple): low clip ``eps_low``, or TorchRL's ``(eps_low, eps_high)``. Defaults to ``0.2``.
        clip_epsilon_high (float, optional): high clip ``eps_high`` (DAPO uses 0.28). ``None``: ``clip_epsilon``.
        kl_coeff (float): ``beta``, weight of the KL to the reference actor. ``0`` (default) skips the reference
            forward pass. ``kl_to_ref_coeff`` is TorchRL's name for it (either works).
        aggregation (str, optional): TorchRL ``GRPOLoss``'s name: ``"token_mean"`` (= ``loss_aggregation="bnpo"``),
            ``"prompt_mean"`` (= ``"grpo"``) or ``"none"`` (per-step losses, ``reduction="none"``).
        entropy_coeff (float): entropy bonus weight. Defaults to ``0.0``.
        loss_aggregation (str, optional): ``"grpo"`` (the default), ``"bnpo"``, ``"dapo"`` or ``"dr_grpo"``: how the
            per-step terms reduce over variable-length episodes when ``reduction`` is not given.
        update_rule (str): ``"ppo_clip"`` (default), ``"cispo"`` (MiniMax-M1) or ``"sapo"`` (soft gate); the SB3
            ``GRPO(update_rule=...)`` options, docs/maths.md section 12.
        delta (float, optional): two-sided clip (INTELLECT-2, TRL ``delta``): cap of the unclipped ratio, > 1.
        clip_ratio_c (float, optional): dual clip (verl ``clip_ratio_c``), > 1.
        sapo_temperature_pos (float): SAPO temperature where the advantage is positive. Defaults to 1.0.
        sapo_temperature_neg (float): SAPO temperature where it is not. Defaults to 1.05.
        kl_estimator (str): ``"k3"`` (default), ``"k1"``, ``"k2"`` or ``"k3+"`` (k3's value, k2's gradient).
        use_bias_correction_kl (bool): multiply the KL by the importance ratio (TRL). Defaults to ``False``.
        importance_sampling_level (str): ``"token"`` (default: one ratio per step) or ``"sequence"`` (GSPO, Zheng et
            al. 2025, arXiv:2507.18071; TRL's option): one ratio per episode, ``exp(mean_t(log pi - log pi_old))``
            over its valid steps, clipped at the episode level (docs/maths.md#sequence-level-ratio-gspo). The episode
            of each step is the ``episode_id`` entry (:class:`~torchrl_pg_extras.GroupedEnv`'s label, kept by
            :class:`~torchrl_pg_extras.GroupBatcher` in both its ``"padded"`` and ``"cat"`` layouts; e.g.
            ``set_keys(episode_id=("collector", "traj_ids"))`` for a collector with ``track_traj_ids=True``), or,
            without that entry, the episodes delimited by ``("next", "done")`` along time (a padded row, or the
            segments of a ``"cat"`` / fixed-frame batch).
        mask_truncated_completions (bool): leave the episodes that ended by truncation (``("next", "truncated")``,
            else ``done & ~terminated``) out of every ``loss_*`` term and its denominators (TRL's option, DAPO's
            overlong filtering; :func:`pg_extras.mask_truncated_episodes`, docs/maths.md#masking-truncated-episodes).
            They stay in the group statistics: the advantage module has already used every episode, as SB3's
            ``GRPO(mask_truncated_completions=True)`` does. Defaults to ``False``.
        top_entropy_quantile (float): keep in ``loss_objective`` only the steps whose policy entropy is in the top
            fraction of the steps in the loss, in ``(0, 1]`` (TRL's option; Wang et al. 2025, arXiv:2506.01939;
            :func:`pg_extras.top_entropy_mask`, docs/maths.md#top-entropy-steps). The entropy is the distribution's
            closed form, else the one-sample estimate of a fresh action (:func:`pg_extras.entropy_or_estimate`, as SB3's
            ``GRPO``); the other steps get no policy-gradient term but stay in the denominators and in the KL / entropy
            terms. ``1.0`` (default): every step.
        max_length (int, optional): Dr. GRPO's constant ``max_length`` (default: the padded length of the batch).
        functional (bool): functionalise the actor (TorchRL convention). Defaults to ``True``.
        reduction (str, optional): as in ``torchrl.objectives``: ``"mean"`` (the mean over the valid steps, which is
            ``loss_aggregation="bnpo"``), ``"sum"`` (sum over valid steps) or ``"none"`` (per-step terms, masked steps
            0). Not given (default): ``loss_aggregation``.

    Outputs: ``loss_objective``, ``clip_fraction``, ``kl_approx`` (k3 estimate of ``KL(pi_old || pi)``),
    ``loss_kl_to_ref`` and ``kl_to_ref`` (when ``kl_coeff > 0``), ``loss_entropy`` and ``entropy`` (when
    ``entropy_coeff > 0``), ``entropy_mask_fraction`` (share of the steps in the loss that the top-entropy mask
    keeps, when ``top_entropy_quantile < 1``).

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
        >>> gspo = GRPOLoss(actor, importance_sampling_level="sequence", mask_truncated_completions=True,
        ...                 top_entropy_quantile=0.5)  # GSPO, TRL's truncation and top-entropy masks
        >>> gspo.make_value_estimator(GroupRelativeAdvantage(group_size=2))  # doctest: +ELLIPSIS
        GRPOLoss(...)
        >>> sorted(gspo(data).keys())
        ['clip_fraction', 'entropy_mask_fraction', 'kl_approx', 'loss_objective']
    """

    @dataclass
    class _AcceptedKeys(PolicyGradientLossBase._AcceptedKeys):
        """Configurable tensordict keys (``set_keys``): those of
        :class:`~torchrl_pg_extras._base.PolicyGradientKeys` plus

        Attributes:
            group_id (NestedKey): group label (for the advantage module). Defaults to ``"group_id"``.
            episode_id (NestedKey): integer episode label of each step, read by
                ``importance_sampling_level="sequence"`` when present (:class:`~torchrl_pg_extras.GroupedEnv`'s).
                Defaults to ``"episode_id"``.
        """

        group_id: NestedKey = "group_id"
        episode_id: NestedKey = "episode_id"

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
        loss_aggregation: str | None = None,
        max_length: int | None = None,
        kl_estimator: str = "k3",
        use_bias_correction_kl: bool = False,
        update_rule: str = "ppo_clip",
        delta: float | None = None,
        clip_ratio_c: float | None = None,
        sapo_temperature_pos: float = 1.0,
        sapo_temperature_neg: float = 1.05,
        importance_sampling_level: str = "token",
        mask_truncated_completions: bool = False,
        top_entropy_quantile: float = 1.0,
        functional: bool = True,
        reduction: str | None = None,
        kl_to_ref_coeff: float | None = None,
        aggregation: str | None = None,
    ) -> None:
        if isinstance(clip_epsilon, (tuple, list)):  # TorchRL's GRPOLoss: (eps_low, eps_high)
            if len(clip_epsilon) != 2 or clip_epsilon_high is not None:
                raise ValueError(
                    f"clip_epsilon={clip_epsilon!r}: give a float, or TorchRL's (eps_low, eps_high) pair without "
                    "clip_epsilon_high."
                )
            clip_epsilon, clip_epsilon_high = clip_epsilon
        if kl_to_ref_coeff is not None:  # TorchRL's name for kl_coeff
            if kl_coeff not in (0.0, kl_to_ref_coeff):
                raise ValueError(f"kl_coeff={kl_coeff} and kl_to_ref_coeff={kl_to_ref_coeff}: they are one option, give one.")
            kl_coeff = kl_to_ref_coeff
        if aggregation is not None:  # TorchRL's GRPOLoss values
            check_choice("aggregation", aggregation, tuple(TORCHRL_AGGREGATIONS))
            loss_aggregation, reduction = TORCHRL_AGGREGATIONS[aggregation], ("none" if aggregation == "none" else reduction)
        clip_epsilon = check_float("clip_epsilon", clip_epsilon, low=0.0, hint="e.g. 0.2")
        clip_epsilon_high = check_float("clip_epsilon_high", clip_epsilon_high, low=0.0, allow_none=True, hint="e.g. 0.28")
        kl_coeff = check_float("kl_coeff", kl_coeff, low=0.0, hint="beta, e.g. 0.04")
        if reduction == "mean":  # TorchRL's meaning: the mean over the valid steps
            if loss_aggregation not in (None, "bnpo"):
                raise ValueError(
                    f"reduction='mean' (TorchRL's mean over the valid steps, loss_aggregation='bnpo') and "
                    f"loss_aggregation={loss_aggregation!r} disagree: give loss_aggregation alone for its reduction."
                )
            loss_aggregation = "bnpo"
        objective_options = ObjectiveOptions.from_arguments(  # checked once: pg_extras.ObjectiveOptions
            locals(),
            loss_aggregation="grpo" if loss_aggregation is None else loss_aggregation,
            update_rules=RATIO_RULES,  # the rules that clip or gate the ratio
        )
        max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
        super().__init__(actor_network, None, functional=functional, reduction=reduction, entropy_coeff=entropy_coeff)
        self.clip_epsilon = float(clip_epsilon)
        self.clip_epsilon_high = None if clip_epsilon_high is None else float(clip_epsilon_high)
        self.max_length = max_length
        #: the checked options of the objective (pg_extras.policy_objective); the attributes below read and set them
        self.objective_options = objective_options
        self.register_coeff_buffer("kl_coeff", float(kl_coeff), device=self._default_device)
        self.reference_actor_network_params = TensorDictParams(self._current_actor_params().data.clone(), no_convert=True)

    _loss_out_keys = ("loss_objective", "clip_fraction", "kl_approx")

    def _make_default_estimator(self, **hyperparams):
        """``make_value_estimator()``: :class:`~torchrl_pg_extras.GroupRelativeAdvantage` with ``hyperparams`` (the groups
        from :class:`~torchrl_pg_extras.GroupedEnv`'s ``group_id`` labels, or ``group_size=`` consecutive rows)."""
        return GroupRelativeAdvantage(**hyperparams)

    @property
    def _has_kl(self) -> bool:  # type: ignore[override]
        """Live: ``loss.kl_coeff = 0.5`` after ``GRPOLoss(actor)`` turns the KL term on (the reference always exists)."""
        return bool(self.kl_coeff > 0)

    def _default_out_keys(self) -> list[str]:
        keys = super()._default_out_keys()
        return [*keys, "entropy_mask_fraction"] if self.top_entropy_quantile < 1.0 else keys

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

    def _episode_aggregator(
        self,
        tensordict: TensorDictBase,
        mask: torch.Tensor | None,
        device: torch.device,
        loss_mask: torch.Tensor | None = None,
    ):
        """Return ``x [*B, T] -> scalar`` that applies ``loss_aggregation`` over the steps in the loss (0 when none is).

        ``mask``: the valid steps, which say which episodes the batch holds (``dr_grpo``'s episode count);
        ``loss_mask``: the steps in the loss (default ``mask``; without the truncated episodes, whose rows stay).
        """
        shape = tensordict.batch_size
        valid = torch.ones(shape, dtype=torch.bool, device=device) if mask is None else mask
        in_loss = valid if loss_mask is None else loss_mask
        if not bool(in_loss.any()):  # an all-padding batch: no step to average over, and no gradient
            return lambda x: torch.where(in_loss, x, torch.zeros_like(x)).sum()
        if self.loss_aggregation in ("bnpo", "dapo") or tensordict.batch_dims == 0:
            return lambda x: aggregate_loss(x.reshape(-1), in_loss.reshape(-1), self.loss_aggregation)
        layout, tdim = self._episodes(tensordict)
        keep = (layout.mask & layout.to_episodes(to_time_major(valid, shape, tdim, "mask"), fill=False)).any(1)
        ep_mask = (layout.mask & layout.to_episodes(to_time_major(in_loss, shape, tdim, "mask"), fill=False))[keep]

        def aggregate(x: torch.Tensor) -> torch.Tensor:
            x_e = layout.to_episodes(to_time_major(x, shape, tdim))[keep]
            return aggregate_loss(x_e, ep_mask, self.loss_aggregation, self.max_length)

        return aggregate

    def _episodes(self, tensordict: TensorDictBase) -> tuple[EpisodeLayout, int]:
        """The episodes of the batch, delimited by ``("next", "done")`` along time, and the time dimension."""
        tdim = time_dim(tensordict, owner=self)
        done = get_required(tensordict, ("next", self.tensor_keys.done), "done", type(self).__name__)
        return EpisodeLayout.from_dones(to_time_major(done, tensordict.batch_size, tdim, "done")), tdim

    def _episode_index(self, tensordict: TensorDictBase, mask: torch.Tensor | None) -> torch.Tensor:
        """``[*B]`` integer episode of every step for GSPO (``-1`` on the steps out of the loss: they join no episode).

        The ``episode_id`` entry when present (any layout), else the episodes delimited by ``done`` along time.
        """
        shape = tensordict.batch_size
        episode = tensordict.get(self.tensor_keys.episode_id, default=None)
        if episode is not None:
            if episode.is_floating_point() or episode.dtype == torch.bool:
                raise TypeError(
                    f"GRPOLoss: the episode label {self.tensor_keys.episode_id!r} has dtype {episode.dtype}; episode "
                    "labels must be integers (GroupedEnv writes int64 labels): cast them, or name another entry with "
                    "set_keys(episode_id=...)."
                )
            episode = as_batch(episode, shape, "episode_id").to(torch.int64)
        else:
            layout, tdim = self._episodes(tensordict)
            episode = from_time_major(layout.episode_index, shape, tdim).reshape(shape)
        return episode if mask is None else torch.where(mask, episode, torch.full_like(episode, -1))

    def _loss_mask(self, tensordict: TensorDictBase, mask: torch.Tensor | None) -> torch.Tensor | None:
        """The steps in the loss: the valid ones, without the truncated episodes (``mask_truncated_completions``)."""
        if not self.mask_truncated_completions:
            return mask
        shape = tensordict.batch_size
        layout, tdim = self._episodes(tensordict)
        _, _, truncated = end_flags(tensordict, self.tensor_keys, type(self).__name__)  # as the advantage modules
        valid = torch.ones(shape, dtype=torch.bool, device=truncated.device) if mask is None else mask
        ep_valid = layout.to_episodes(to_time_major(valid, shape, tdim, "mask"), fill=False)
        ep_truncated = layout.to_episodes(to_time_major(truncated.to(torch.bool), shape, tdim, "truncated"), fill=False)
        kept = mask_truncated_episodes(layout.mask & ep_valid, ep_truncated)
        return from_time_major(layout.to_steps(kept), shape, tdim).reshape(shape)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_size.numel() == 0:  # an empty batch: zero losses, finite diagnostics
            return self._empty_output()
        tensordict = tensordict.clone(False)
        advantage, mask = self._advantage(tensordict, False)
        dist = self._dist(tensordict)
        log_prob = self._log_prob(dist, tensordict, mask)
        old_log_prob = self._old_log_prob(tensordict, mask).to(log_prob.dtype)
        loss_mask = self._loss_mask(tensordict, mask)
        episode_index = None
        if self.importance_sampling_level != "token":  # GSPO: one ratio per episode
            episode_index = self._episode_index(tensordict, mask)
        ref_log_prob = None
        if self._has_kl:
            with torch.no_grad():
                ref_log_prob = self._log_prob(self._dist(tensordict, self.reference_actor_network_params), tensordict, mask)
        terms = self._policy_terms(
            dist,
            tensordict,
            log_prob,
            old_log_prob,
            advantage,
            clip_range=self.clip_epsilon,
            clip_range_high=self.clip_epsilon_high,
            beta=float(self.kl_coeff),
            ref_log_prob=ref_log_prob,
            in_loss=loss_mask,
            episode_index=episode_index,
        )
        diagnostics = {
            "clip_fraction": self._mean(terms.clipped.to(log_prob.dtype), tensordict),
            "kl_approx": self._mean(terms.approx_kl, tensordict),
        }
        if terms.entropy_mask_fraction is not None:
            diagnostics["entropy_mask_fraction"] = terms.entropy_mask_fraction
        losses = {"loss_objective": terms.policy}
        if terms.kl_penalty is not None:
            losses["loss_kl_to_ref"] = terms.kl_penalty
            diagnostics["kl_to_ref"] = self._mean(terms.kl, tensordict)
        if terms.entropy_bonus is not None:
            losses["loss_entropy"] = terms.entropy_bonus
            diagnostics["entropy"] = self._mean(terms.entropy, tensordict)
        if self.reduction == "mean":
            aggregate = self._episode_aggregator(tensordict, mask, log_prob.device, loss_mask)
            losses = {k: aggregate(v) for k, v in losses.items()}
        else:
            if loss_mask is not mask:  # truncated episodes leave the loss
                losses = {k: torch.where(loss_mask, v, torch.zeros_like(v)) for k, v in losses.items()}
            losses = {k: self._reduce_loss(v, tensordict) for k, v in losses.items()}
        return self._out({**losses, **diagnostics})
