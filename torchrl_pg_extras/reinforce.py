"""REINFORCE (docs/maths.md §2) and REINFORCE with baseline (docs/maths.md §3) as a TorchRL loss module."""

from __future__ import annotations

from dataclasses import dataclass

from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, dispatch

from pg_extras import ObjectiveOptions
from pg_extras.validation import check_bool, check_float
from torchrl_pg_extras._base import PolicyGradientLossBase
from torchrl_pg_extras._utils import deprecated_discount
from torchrl_pg_extras.value import MonteCarloEstimator

__all__ = ["REINFORCELoss"]


class REINFORCELoss(PolicyGradientLossBase):
    """REINFORCE loss, critic-free or with a learned baseline.

    Without a critic this is pure Monte-Carlo REINFORCE (docs/maths.md §2, Williams 1992): ``loss_actor`` is the mean of
    ``-log pi(a_t|s_t) G_t`` with ``G_t`` the discounted return-to-go of complete episodes. With a critic it is
    REINFORCE with baseline (docs/maths.md §3): the advantage is ``G_t - V(s_t)`` and ``loss_value`` regresses ``V(s_t)``
    on ``G_t``. The log-probabilities are those of the stored actions under the current policy.

    The advantage is read from the input (``tensor_keys.advantage``) or, when absent, computed by the value
    estimator: :class:`~torchrl_pg_extras.MonteCarloEstimator` by default (``gamma=0.99``, the critic as baseline),
    which needs complete episodes: collect them with ``Collector(..., trajs_per_batch=...)``. Any other advantage
    module can be set with :meth:`make_value_estimator` (e.g. ``ValueEstimators.GAE`` for an actor-critic).

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy (e.g. a
            :class:`~torchrl.modules.ProbabilisticActor`); discrete or continuous actions.
        critic_network (TensorDictModule, optional): the baseline ``V(s)`` (e.g. a
            :class:`~torchrl.modules.ValueOperator`). ``None``: no critic exists (pure REINFORCE).

    Keyword Args:
        gamma (float): deprecated, as in TorchRL's own losses: pass it to the estimator instead,
            ``loss.make_value_estimator(gamma=0.99)`` (the default Monte-Carlo estimator's discount, ``0.99``).
        entropy_coeff (float): entropy bonus weight (adds ``loss_entropy`` and ``entropy``). Defaults to ``0.0``.
        critic_coeff (float): weight of ``loss_value``. Defaults to ``1.0``.
        loss_critic_type (str): ``"l2"`` (MSE, default), ``"l1"`` or ``"smooth_l1"``.
        normalize_advantage (bool): standardise the advantage over the valid steps of the batch (a baseline and a
            scale, docs/maths.md#3-baselines-and-gae). Defaults to ``False``.
        separate_losses (bool): parameters shared by actor and critic get no gradient from ``loss_value``.
            Defaults to ``False``.
        functional (bool): functionalise the networks (TorchRL convention). Defaults to ``True``.
        reduction (str): ``"mean"`` (default, over valid steps), ``"sum"`` or ``"none"`` (per-step, masked steps 0).

    Outputs: ``loss_actor``, ``loss_value`` (with a critic), ``explained_variance`` (with a critic),
    ``loss_entropy`` and ``entropy`` (when ``entropy_coeff > 0``).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.modules import ProbabilisticActor, ValueOperator
        >>> from torchrl_pg_extras import REINFORCELoss
        >>> actor = ProbabilisticActor(TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"]),
        ...                            in_keys=["logits"], distribution_class=torch.distributions.Categorical,
        ...                            return_log_prob=True)
        >>> critic = ValueOperator(nn.Linear(3, 1), in_keys=["observation"])
        >>> done = torch.tensor([[False, False, True], [False, True, False]]).unsqueeze(-1)
        >>> data = TensorDict({"observation": torch.randn(2, 3, 3), "action": torch.randint(2, (2, 3)),
        ...                    "next": {"reward": torch.ones(2, 3, 1), "done": done, "terminated": done},
        ...                    "collector": {"mask": torch.tensor([[True, True, True], [True, True, False]])}}, [2, 3])
        >>> loss = REINFORCELoss(actor, critic)
        >>> out = loss(data)
        >>> sorted(out.keys())
        ['explained_variance', 'loss_actor', 'loss_value']
        >>> (out["loss_actor"] + out["loss_value"]).backward()
    """

    @dataclass
    class _AcceptedKeys(PolicyGradientLossBase._AcceptedKeys):
        """Configurable tensordict keys (``set_keys``): those of
        :class:`~torchrl_pg_extras._base.PolicyGradientKeys` (``sample_log_prob`` is not read by this loss)."""

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        critic_network: TensorDictModule | None = None,
        *,
        gamma: float | None = None,
        entropy_coeff: float = 0.0,
        critic_coeff: float = 1.0,
        loss_critic_type: str = "l2",
        normalize_advantage: bool = False,
        separate_losses: bool = False,
        functional: bool = True,
        reduction: str | None = None,
    ) -> None:
        gamma = deprecated_discount("REINFORCELoss", gamma=gamma).get("gamma", 0.99)
        gamma = check_float("gamma", gamma, low=0.0, high=1.0)
        normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
        super().__init__(
            actor_network,
            critic_network,
            functional=functional,
            reduction=reduction,
            separate_losses=separate_losses,
            loss_critic_type=loss_critic_type,
            critic_coeff=critic_coeff,
            entropy_coeff=entropy_coeff,
        )
        self.gamma = float(gamma)
        self.normalize_advantage = normalize_advantage

    _loss_out_keys = ("loss_actor",)
    #: the options of :func:`pg_extras.policy_objective`: the score-function rule
    objective_options = ObjectiveOptions("pg")
    _critic_out_key = "loss_value"

    def _make_default_estimator(self, **hyperparams):
        hyperparams.setdefault("gamma", self.gamma)
        hyperparams.setdefault("value_network", self.critic_network)
        return MonteCarloEstimator(**hyperparams)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_size.numel() == 0:  # an empty batch: zero losses, finite diagnostics
            return self._empty_output()
        tensordict = tensordict.clone(False)
        advantage, mask = self._advantage(tensordict, self.normalize_advantage)
        dist = self._dist(tensordict)
        log_prob = self._log_prob(dist, tensordict, mask)
        terms = self._policy_terms(dist, tensordict, log_prob, None, advantage)
        out = {"loss_actor": self._reduce_loss(terms.policy, tensordict)}
        if self.critic_network is not None:
            loss_value, explained_variance = self._critic_loss(tensordict, mask)
            out["loss_value"] = self._reduce_loss(loss_value, tensordict)
            out["explained_variance"] = explained_variance
        if terms.entropy_bonus is not None:
            out["loss_entropy"] = self._reduce_loss(terms.entropy_bonus, tensordict)
            out["entropy"] = self._mean(terms.entropy, tensordict)  # type: ignore[arg-type]
        return self._out(out)
