"""Trust Region Policy Optimization (TRPO) for Stable-Baselines3, a drop-in for ``sb3_contrib.TRPO``.

Maths: seed section 2.4 (policy-gradient-maths.md) and Schulman et al. 2015, "Trust Region Policy Optimization"
(https://arxiv.org/abs/1502.05477). The policy step is the core's :func:`pg_extras.trust_region_step` (conjugate
gradient on Gauss-Newton Fisher-vector products ``J^T M J v`` from :func:`pg_extras.distribution_fisher`, backtracking
line search under the KL bound); advantages come from :func:`pg_extras.gae` or :func:`pg_extras.returns_to_go`. For
SB3's default MLP policy, :class:`pg_extras.MlpLinearization` gives the Jacobian products and the critic's gradients
without autograd overhead. This module only moves data between SB3 and the core.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch import nn
from torch.distributions import Bernoulli, Categorical, Normal
from torch.nn import functional as F

from pg_extras import (
    MlpLinearization,
    TrustRegionResult,
    categorical_kl,
    distribution_fisher,
    distribution_fvp_fn,
    exact_kl,
    gae,
    importance_ratio,
    next_values_from_values,
    returns_to_go,
    trust_region_step,
)
from sb3_pg_extras.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["ADVANTAGE_ESTIMATORS", "TRPO"]

SelfTRPO = TypeVar("SelfTRPO", bound="TRPO")

#: Advantage estimators of :class:`TRPO` (``advantage_estimator``).
ADVANTAGE_ESTIMATORS = ("gae", "mc")

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


# ----------------------------------------------------------------------------------------------------------------------
# Actor / critic parameters, decided structurally
# ----------------------------------------------------------------------------------------------------------------------
def reachable_parameters(outputs: Sequence[th.Tensor], params: Sequence[nn.Parameter]) -> list[nn.Parameter]:
    """The members of ``params`` that the autograd graph of ``outputs`` reaches (in the order of ``params``).

    Walks ``grad_fn.next_functions`` down to the leaves (no backward pass is run), so it costs microseconds.
    TRPO uses it to split a policy into actor parameters (reached by the action distribution) and critic parameters
    (reached only by the value head), whatever the modules are called.

    Example::

        >>> lin, other = nn.Linear(2, 1), nn.Linear(2, 1)
        >>> out = lin(th.ones(1, 2))
        >>> [p.shape for p in reachable_parameters([out], [*lin.parameters(), *other.parameters()])]
        [torch.Size([1, 2]), torch.Size([1])]
    """
    found: set[int] = set()
    seen: set[Any] = set()
    stack = [o.grad_fn for o in outputs if o.grad_fn is not None]
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


# ----------------------------------------------------------------------------------------------------------------------
# KL(pi_old || pi) on SB3 distributions
# ----------------------------------------------------------------------------------------------------------------------
def _torch_distributions(distribution: Any) -> list[th.distributions.Distribution]:
    """The torch distributions inside an SB3 ``Distribution`` (a list for ``MultiCategoricalDistribution``)."""
    inner = distribution.distribution
    return list(inner) if isinstance(inner, (list, tuple)) else [inner]


def _detached(dist: th.distributions.Distribution) -> th.distributions.Distribution | None:
    """A copy of ``dist`` with detached parameters (``None`` for a type this module does not know)."""
    if type(dist) is Categorical:
        return Categorical(logits=dist.logits.detach(), validate_args=False)
    if type(dist) is Normal:
        return Normal(dist.loc.detach(), dist.scale.detach(), validate_args=False)
    if type(dist) is Bernoulli:
        return Bernoulli(logits=dist.logits.detach(), validate_args=False)
    return None


def _per_sample_kl(old: Sequence[th.distributions.Distribution], new: Sequence[th.distributions.Distribution]) -> th.Tensor:
    """``KL(pi_old(.|s) || pi(.|s))`` of the joint action distribution, one value per sample ``[B]``.

    Independent components (MultiDiscrete sub-actions, Box / MultiBinary dimensions) add up.
    """
    total: th.Tensor | None = None
    for p, q in zip(old, new, strict=True):
        if type(p) is Categorical and type(q) is Categorical:
            kl = categorical_kl(p.logits, q.logits)
        else:
            kl = exact_kl(p, q)  # torch's closed forms (Normal, Bernoulli, ...)
            if kl.dim() > 1:
                kl = kl.reshape(kl.shape[0], -1).sum(1)
        total = kl if total is None else total + kl
    assert total is not None
    return total


# ----------------------------------------------------------------------------------------------------------------------
# Lean rollout step for SB3's own actor-critic forward
# ----------------------------------------------------------------------------------------------------------------------
def _check_finite(name: str, x: th.Tensor) -> None:
    if not bool(th.isfinite(x).all()):
        raise ValueError(
            f"The policy produced non-finite {name}: check the observations (normalise them) and the learning rate."
        )


def _fast_rollout_step(policy: ActorCriticPolicy) -> Callable[[PyTorchObs], tuple[th.Tensor, th.Tensor, th.Tensor]] | None:
    """``obs -> (actions, values, log_prob)`` equal to ``policy(obs)``, without building SB3/torch distribution objects.

    Only for policies whose ``forward`` and ``_get_action_dist_from_latent`` are SB3's own, with a Categorical or
    diagonal-Gaussian action distribution and no gSDE; ``None`` otherwise (the caller then uses ``policy(obs)``).
    It runs exactly the tensor operations (and random draws) of ``torch.distributions.Categorical`` /
    ``Normal`` + ``sum_independent_dims``, so the rollout is bit-identical to SB3's (tested).
    """
    cls = type(policy)
    if (
        not isinstance(policy, ActorCriticPolicy)
        or cls.forward is not ActorCriticPolicy.forward
        or cls._get_action_dist_from_latent is not ActorCriticPolicy._get_action_dist_from_latent
        or policy.use_sde
        or policy._forward_hooks
        or policy._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    ):
        return None
    dist_type = type(policy.action_dist)
    if dist_type not in (CategoricalDistribution, DiagGaussianDistribution):
        return None
    action_shape = policy.action_space.shape

    actor_branch, critic_branch = _default_mlp_branch(policy, "actor"), _default_mlp_branch(policy, "critic")
    if actor_branch is not None and critic_branch is not None and cls.extract_features is ActorCriticPolicy.extract_features:
        # SB3's default MLP policy: the same tensor operations as its modules, without the module-call overhead
        actor_layers, critic_layers = actor_branch[1], critic_branch[1]

        def heads(obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
            features = preprocess_obs(obs, policy.observation_space, normalize_images=policy.normalize_images).flatten(1)
            return _mlp_apply(critic_layers, features), _mlp_apply(actor_layers, features)

    else:

        def heads(obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
            features = policy.extract_features(obs)
            if policy.share_features_extractor:
                latent_pi, latent_vf = policy.mlp_extractor(features)
            else:
                pi_features, vf_features = features
                latent_pi = policy.mlp_extractor.forward_actor(pi_features)
                latent_vf = policy.mlp_extractor.forward_critic(vf_features)
            return policy.value_net(latent_vf), policy.action_net(latent_pi)

    if dist_type is CategoricalDistribution:

        def step(obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            values, logits = heads(obs)  # (NaN logits make torch.multinomial raise)
            logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # as Categorical(logits=...)
            probs = F.softmax(logits, dim=-1)
            actions = th.multinomial(probs.reshape(-1, logits.shape[-1]), 1, True).T.reshape(logits.shape[:-1])
            log_prob = logits.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
            return actions.reshape((-1, *action_shape)), values, log_prob

    else:

        def step(obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            values, mean = heads(obs)
            _check_finite("action means", mean)
            std = th.ones_like(mean) * policy.log_std.exp()  # as DiagGaussianDistribution
            actions = mean + th.empty(mean.shape, dtype=mean.dtype, device=mean.device).normal_() * std  # Normal.rsample
            log_prob = (-((actions - mean) ** 2) / (2 * std**2) - std.log() - _LOG_SQRT_2PI).sum(dim=1)  # Normal.log_prob
            return actions.reshape((-1, *action_shape)), values, log_prob

    return step


def _direct_add(buffer: RolloutBuffer) -> Callable[..., None]:
    """``buffer.add`` for SB3's own ``RolloutBuffer``, writing straight into its arrays (no intermediate copies)."""
    discrete_obs = isinstance(buffer.observation_space, spaces.Discrete)
    obs_shape = (buffer.n_envs, *buffer.obs_shape)
    action_shape = (buffer.n_envs, buffer.action_dim)

    def add(
        obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        episode_start: np.ndarray,
        value: th.Tensor,
        log_prob: th.Tensor,
    ) -> None:
        pos = buffer.pos
        buffer.observations[pos] = obs.reshape(obs_shape) if discrete_obs else obs
        buffer.actions[pos] = action.reshape(action_shape)
        buffer.rewards[pos] = reward
        buffer.episode_starts[pos] = episode_start
        buffer.values[pos] = value.detach().cpu().numpy().reshape(-1)
        buffer.log_probs[pos] = log_prob.detach().cpu().numpy().reshape(-1)
        buffer.pos = pos + 1
        if buffer.pos == buffer.buffer_size:
            buffer.full = True

    return add


# ----------------------------------------------------------------------------------------------------------------------
# SB3's default MLP actor / critic without autograd overhead (pg_extras.MlpLinearization)
# ----------------------------------------------------------------------------------------------------------------------
_ACTIVATION_NAMES: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}


def _no_hooks(*modules: nn.Module) -> bool:
    return not (
        nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
        or any(m._forward_hooks or m._forward_pre_hooks for module in modules for m in module.modules())
    )


def _mlp_layers(modules: Sequence[nn.Module]) -> list[tuple[nn.Linear, str | None]] | None:
    """``(linear, activation name or None)`` per layer for a chain of ``nn.Linear`` / ``nn.Tanh`` / ``nn.ReLU``, or None."""
    layers: list[tuple[nn.Linear, str | None]] = []
    for m in modules:
        if type(m) is nn.Linear:
            layers.append((m, None))
        elif type(m) in _ACTIVATION_NAMES and layers and layers[-1][1] is None:
            layers[-1] = (layers[-1][0], _ACTIVATION_NAMES[type(m)])
        else:
            return None
    return layers or None


def _mlp_apply(layers: Sequence[tuple[nn.Linear, str | None]], x: th.Tensor) -> th.Tensor:
    """The chain of ``layers`` applied to ``x`` with the tensor operations of the modules themselves."""
    for lin, act in layers:
        x = F.linear(x, lin.weight, lin.bias)
        if act == "tanh":
            x = th.tanh(x)
        elif act == "relu":
            x = th.relu(x)
    return x


def _default_mlp_branch(policy: BasePolicy, branch: str) -> tuple[th.nn.Module, list[tuple[nn.Linear, str | None]]] | None:
    """``(features extractor, layers)`` of SB3's default ``"actor"`` / ``"critic"`` path (FlattenExtractor, MlpExtractor,
    linear head, no hooks), or None for any other policy."""
    mlp = getattr(policy, "mlp_extractor", None)
    head = getattr(policy, "action_net" if branch == "actor" else "value_net", None)
    extractor = getattr(policy, "pi_features_extractor" if branch == "actor" else "vf_features_extractor", None)
    if (
        not isinstance(policy, ActorCriticPolicy)
        or type(extractor) is not FlattenExtractor
        or type(mlp) is not MlpExtractor
        or type(head) is not nn.Linear
    ):
        return None
    body = mlp.policy_net if branch == "actor" else mlp.value_net
    if not isinstance(body, nn.Sequential) or not _no_hooks(extractor, mlp, head):
        return None
    layers = _mlp_layers([*body, head])
    if layers is None or layers[-1][1] is not None:
        return None
    return extractor, layers


def _critic_path(policy: BasePolicy, obs: PyTorchObs) -> tuple[PyTorchObs, Callable[[Any], th.Tensor]]:
    """``(inputs, values_of)`` with ``values_of(inputs[idx]) == policy.predict_values(obs[idx])``.

    For SB3's own ``predict_values`` with a ``FlattenExtractor`` (no parameters: preprocessing and flattening are
    the same for every minibatch) the features are computed once for the whole batch and only the trainable critic
    path (``mlp_extractor.forward_critic`` and ``value_net``) runs per minibatch; otherwise ``(obs, predict_values)``.
    """
    extractor = getattr(policy, "vf_features_extractor", None)
    if (
        isinstance(policy, ActorCriticPolicy)
        and type(policy).predict_values is ActorCriticPolicy.predict_values
        and type(extractor) is FlattenExtractor
        and _no_hooks(extractor)
    ):
        with th.no_grad():
            features = BasePolicy.extract_features(policy, obs, extractor)

        def values_of(x: th.Tensor) -> th.Tensor:
            return policy.value_net(policy.mlp_extractor.forward_critic(x))

        return features, values_of
    return obs, policy.predict_values


def _mlp_value_step(
    policy: BasePolicy, critic_params: Sequence[nn.Parameter]
) -> Callable[[th.Tensor, th.Tensor], th.Tensor] | None:
    """``(features, returns) -> loss`` setting ``.grad`` of ``critic_params`` to the gradient of the MSE value loss.

    For SB3's default critic path (see :func:`_default_mlp_branch`) whose parameters are exactly ``critic_params``
    (all trainable, none shared with the actor): one :class:`pg_extras.MlpLinearization` forward and backpropagation
    per minibatch, without the autograd graph and engine overhead that dominates such small steps. The gradients equal
    autograd's up to float rounding (tested). ``None`` for any other critic.
    """
    branch = _default_mlp_branch(policy, "critic")
    if branch is None or type(policy).predict_values is not ActorCriticPolicy.predict_values:
        return None
    layers = branch[1]
    params = [p for lin, _ in layers for p in lin.parameters()]
    if {id(p) for p in params} != {id(p) for p in critic_params} or not all(p.requires_grad for p in params):
        return None
    spec = [(lin.weight, lin.bias, act) for lin, act in layers]

    def step(x: th.Tensor, target: th.Tensor) -> th.Tensor:
        mlp = MlpLinearization(spec, x)
        with th.no_grad():
            diff = mlp.output.flatten() - target
            loss = (diff * diff).mean()
            grads = mlp.vjp((diff * (2.0 / diff.numel())).reshape(mlp.output.shape))  # d loss / d values
        for (lin, _), (grad_w, grad_b) in zip(layers, grads, strict=True):
            lin.weight.grad = grad_w
            if lin.bias is not None:
                lin.bias.grad = grad_b
        return loss

    return step


def _mlp_actor_fvp(
    policy: BasePolicy,
    obs: PyTorchObs,
    actor_params: Sequence[nn.Parameter],
    distributions: Sequence[th.distributions.Distribution],
) -> Callable[[th.Tensor], th.Tensor] | None:
    """Gauss-Newton Fisher-vector product ``v -> J^T M J v`` for SB3's default MLP actor, or None for other policies.

    ``M`` is :func:`pg_extras.distribution_fisher` of the action distribution (Categorical logits, or the diagonal
    Gaussian's mean and std); ``J v`` / ``J^T u`` of the actor MLP come from :class:`pg_extras.MlpLinearization`
    (and ``d std / d log_std = std`` for the Gaussian's state-independent ``log_std``). Same product as
    :func:`pg_extras.distribution_fvp_fn` (tested), at a fraction of the autograd overhead.
    """
    branch = _default_mlp_branch(policy, "actor")
    if (
        branch is None
        or policy.use_sde
        or type(policy).get_distribution is not ActorCriticPolicy.get_distribution
        or type(policy)._get_action_dist_from_latent is not ActorCriticPolicy._get_action_dist_from_latent
        or type(policy.action_dist) not in (CategoricalDistribution, DiagGaussianDistribution)
    ):
        return None
    extractor, layers = branch
    gaussian = type(policy.action_dist) is DiagGaussianDistribution
    params: list[nn.Parameter] = [p for lin, _ in layers for p in lin.parameters()]
    if gaussian:
        params.append(policy.log_std)
    if {id(p) for p in params} != {id(p) for p in actor_params} or not all(p.requires_grad for p in params):
        return None
    fisher = distribution_fisher(distributions, batch_dims=1)
    if fisher is None or len(fisher[0]) != (2 if gaussian else 1):
        return None
    output_fisher = fisher[1]
    with th.no_grad():
        features = BasePolicy.extract_features(policy, obs, extractor)
    if features.dim() != 2:
        return None
    mlp = MlpLinearization([(lin.weight, lin.bias, act) for lin, act in layers], features)
    scale = fisher[0][1].detach() if gaussian else None  # [B, d]: d scale / d log_std = scale
    offsets: dict[int, tuple[int, int]] = {}
    start = 0
    for p in actor_params:
        offsets[id(p)] = (start, start + p.numel())
        start += p.numel()

    def chunk(v: th.Tensor, p: th.Tensor) -> th.Tensor:
        begin, end = offsets[id(p)]
        return v[begin:end].view_as(p)

    def fvp(v: th.Tensor) -> th.Tensor:
        v = v.detach()
        tangents = [(chunk(v, lin.weight), None if lin.bias is None else chunk(v, lin.bias)) for lin, _ in layers]
        jv = [mlp.jvp(tangents)]
        if scale is not None:
            jv.append(scale * chunk(v, policy.log_std))
        mjv = output_fisher(jv)
        out = th.empty_like(v)
        with th.no_grad():
            for (lin, _), (grad_w, grad_b) in zip(layers, mlp.vjp(mjv[0]), strict=True):
                chunk(out, lin.weight).copy_(grad_w)
                if lin.bias is not None:
                    chunk(out, lin.bias).copy_(grad_b)
            if scale is not None:
                chunk(out, policy.log_std).copy_((mjv[1] * scale).sum(0))
        return out

    return fvp


def _critic_optimizer(optimizer: th.optim.Optimizer, critic_params: Sequence[nn.Parameter]) -> th.optim.Optimizer:
    """An optimizer over ``critic_params`` only that *shares* ``optimizer``'s per-parameter state and hyperparameters.

    Only for ``torch.optim.Adam`` / ``AdamW`` with the critic in one parameter group (else ``optimizer`` itself): the
    same update, without looping over the actor's parameters at every step; moments and step counts are written into
    ``optimizer.state``, so saving, loading and the learning-rate schedule see a single optimizer.
    """
    if type(optimizer) not in (th.optim.Adam, th.optim.AdamW):
        return optimizer
    ids = {id(p) for p in critic_params}
    groups = [g for g in optimizer.param_groups if any(id(p) in ids for p in g["params"])]
    if len(groups) != 1 or not ids <= {id(p) for p in groups[0]["params"]}:
        return optimizer
    sub = type(optimizer)(list(critic_params), **optimizer.defaults)
    sub.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
    sub.state = optimizer.state  # the same dict: one set of Adam moments
    return sub


# ----------------------------------------------------------------------------------------------------------------------
# The algorithm
# ----------------------------------------------------------------------------------------------------------------------
class TRPO(OnPolicyAlgorithm):
    """Trust Region Policy Optimization (TRPO), a drop-in replacement of ``sb3_contrib.TRPO``.

    Paper: https://arxiv.org/abs/1502.05477; maths: seed section 2.4. Each update maximises the importance-ratio
    surrogate ``mean(A * pi(a|s) / pi_old(a|s))`` subject to ``mean KL(pi_old || pi) <= target_kl``: gradient ``g``,
    conjugate gradient for ``x ~ F^-1 g`` with Fisher-vector products (plus ``cg_damping``), the step
    ``sqrt(2 target_kl / x^T F x) x`` and a backtracking line search that accepts only a step that improves the
    surrogate and satisfies the KL bound (else the parameters are restored): :func:`pg_extras.trust_region_step`.
    The critic is then fitted separately (``n_critic_updates`` epochs of minibatch MSE on the returns); a critic update
    never moves an actor parameter.

    Same constructor arguments, defaults, logger keys and save format as ``sb3_contrib.TRPO``, with these differences:

    * the KL is ``KL(pi_old || pi)`` (as in the paper and seed 2.4), where sb3-contrib uses ``KL(pi || pi_old)``;
      it is the exact KL of the joint action distribution: summed over Box / MultiBinary dimensions and MultiDiscrete
      sub-actions (sb3-contrib averages over them, so its bound is looser by the action dimension there);
    * actor and critic parameters are told apart structurally (parameters reached by the action distribution's
      autograd graph are the actor; those reached only by ``predict_values`` are the critic), not by the substring
      ``"value"`` in parameter names, so custom policies with any module names work;
    * ``advantage_estimator`` (extra, last argument) picks the advantage estimator;
    * with SB3's default optimizer (no ``optimizer_kwargs`` in ``policy_kwargs``) the critic's Adam (``eps=1e-5``)
      uses torch's fused kernel on CPU / CUDA: same update rule, far less per-step overhead;
    * the Fisher-vector products are the Gauss-Newton form ``J^T M J v`` (``M`` the Fisher of the action distribution
      in its parameters), equal at ``theta_old`` to the Hessian of the KL that sb3-contrib differentiates twice; for
      SB3's default MLP policy (FlattenExtractor, ``nn.Linear`` + ``Tanh`` / ``ReLU``, Categorical or diagonal
      Gaussian) ``J v`` / ``J^T u`` and the critic's minibatch gradients are computed without autograd
      (:class:`pg_extras.MlpLinearization`); the update equals the generic path's up to float rounding (tested);
    * rollouts are bit-identical to SB3's ``collect_rollouts`` (same random draws) but collected with less overhead.

    :param policy: The policy model to use (MlpPolicy, CnnPolicy, MultiInputPolicy or an ``ActorCriticPolicy`` subclass)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate of the value function (critic) optimizer, it can be a function
        of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size for the value function
    :param gamma: Discount factor
    :param cg_max_steps: maximum number of steps in the Conjugate Gradient algorithm
        for computing the Hessian vector product
    :param cg_damping: damping in the Hessian vector product computation
    :param line_search_shrinking_factor: step-size reduction factor for the line-search
        (i.e., ``theta_new = theta + alpha^i * step``)
    :param line_search_max_iter: maximum number of iteration for the backtracking line-search
    :param n_critic_updates: number of critic updates (epochs over the rollout) per policy update
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE)
        instead of action noise exploration (default: False)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE
        Default: -1 (only sample at the beginning of the rollout)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected.
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param normalize_advantage: Whether to normalize or not the advantage
    :param target_kl: The trust-region radius: bound on the mean ``KL(pi_old || pi)`` of an update.
        Should be small for stability. Values like 0.01, 0.05.
    :param sub_sampling_factor: Sub-sample the batch of the policy step to make computation faster
        (see p40-42 of John Schulman thesis http://joschu.net/docs/thesis.pdf)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    :param advantage_estimator: ``"gae"`` (default): generalised advantage estimation with ``gae_lambda``
        (:func:`pg_extras.gae`); ``"mc"``: ``A_t = G_t - V(s_t)`` with ``G_t`` the Monte-Carlo discounted
        return-to-go (:func:`pg_extras.returns_to_go`, bootstrapped with ``V`` only where an episode is cut by a
        time limit or by the end of the rollout; the critic regresses on ``G_t``; seed 2.3 / 2.4.2). ``"mc"`` equals
        ``"gae"`` with ``gae_lambda=1``. Group-relative advantages (a critic-free TRPO) need synchronised group
        resets and are not available yet: use :class:`sb3_pg_extras.GRPO`.

    Example::

        >>> from sb3_pg_extras import TRPO
        >>> model = TRPO("MlpPolicy", "CartPole-v1", n_steps=512, n_critic_updates=20, cg_damping=1e-3)  # doctest: +SKIP
        >>> model.learn(50_000)  # doctest: +SKIP
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 2048,
        batch_size: int = 128,
        gamma: float = 0.99,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        n_critic_updates: int = 10,
        gae_lambda: float = 0.95,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        normalize_advantage: bool = True,
        target_kl: float = 0.01,
        sub_sampling_factor: int = 1,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
        advantage_estimator: str = "gae",
    ):
        self._check_arguments(
            n_steps=n_steps,
            batch_size=batch_size,
            cg_max_steps=cg_max_steps,
            cg_damping=cg_damping,
            line_search_shrinking_factor=line_search_shrinking_factor,
            line_search_max_iter=line_search_max_iter,
            n_critic_updates=n_critic_updates,
            target_kl=target_kl,
            sub_sampling_factor=sub_sampling_factor,
            gamma=gamma,
            gae_lambda=gae_lambda,
            advantage_estimator=advantage_estimator,
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,  # no entropy bonus in TRPO
            vf_coef=0.0,  # the critic is fitted separately
            max_grad_norm=0.0,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self.normalize_advantage = normalize_advantage
        if self.env is not None:
            buffer_size = self.env.num_envs * self.n_steps
            if normalize_advantage and buffer_size <= 1:
                raise ValueError(
                    f"n_steps * n_envs must be greater than 1 to normalize the advantage (n_steps={self.n_steps}, "
                    f"n_envs={self.env.num_envs}): increase n_steps or pass normalize_advantage=False."
                )
            if buffer_size % batch_size > 0:
                warnings.warn(
                    f"You have specified a mini-batch size of {batch_size}, but because the `RolloutBuffer` is of size "
                    f"`n_steps * n_envs = {buffer_size}`, after every {buffer_size // batch_size} untruncated mini-batches, "
                    f"there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
                    f"We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
                    f"Info: (n_steps={self.n_steps} and n_envs={self.env.num_envs})"
                )
        self.batch_size = batch_size
        self.cg_max_steps = cg_max_steps
        self.cg_damping = cg_damping
        self.line_search_shrinking_factor = line_search_shrinking_factor
        self.line_search_max_iter = line_search_max_iter
        self.target_kl = target_kl
        self.n_critic_updates = n_critic_updates
        self.sub_sampling_factor = sub_sampling_factor
        self.advantage_estimator = advantage_estimator
        #: What the last policy step did (accepted, KL, surrogate gain, ...); ``None`` before the first update.
        self.last_trust_region_result: TrustRegionResult | None = None

        if _init_setup_model:
            self._setup_model()

    @staticmethod
    def _check_arguments(**kw: Any) -> None:
        """Raise ``ValueError`` naming the argument and the fix for any out-of-range hyperparameter."""
        for name in ("n_steps", "batch_size", "cg_max_steps", "line_search_max_iter", "sub_sampling_factor"):
            if not isinstance(kw[name], (int, np.integer)) or kw[name] < 1:
                raise ValueError(f"{name} must be a positive integer, got {kw[name]!r}.")
        if not isinstance(kw["n_critic_updates"], (int, np.integer)) or kw["n_critic_updates"] < 0:
            raise ValueError(f"n_critic_updates must be a non-negative integer, got {kw['n_critic_updates']!r}.")
        if not kw["target_kl"] > 0:
            raise ValueError(f"target_kl must be > 0 (the trust-region radius, e.g. 0.01), got {kw['target_kl']!r}.")
        if not kw["cg_damping"] >= 0:
            raise ValueError(f"cg_damping must be >= 0, got {kw['cg_damping']!r}.")
        if not 0.0 < kw["line_search_shrinking_factor"] < 1.0:
            raise ValueError(f"line_search_shrinking_factor must be in (0, 1), got {kw['line_search_shrinking_factor']!r}.")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= kw[name] <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {kw[name]!r}.")
        estimator = kw["advantage_estimator"]
        if estimator in ("group", "grpo", "group_relative"):
            raise ValueError(
                f"advantage_estimator={estimator!r} is not supported by TRPO yet: group-relative advantages need "
                "synchronised group resets; use sb3_pg_extras.GRPO, or advantage_estimator='gae' / 'mc'."
            )
        if estimator not in ADVANTAGE_ESTIMATORS:
            raise ValueError(
                f"Unknown advantage_estimator={estimator!r}: use one of {', '.join(map(repr, ADVANTAGE_ESTIMATORS))}."
            )

    def _setup_model(self) -> None:
        # The critic takes n_critic_updates * n_minibatches optimizer steps per update: with SB3's default optimizer
        # (Adam, eps=1e-5), use torch's fused Adam kernel (same maths, a fraction of the per-step overhead).
        # Only the policy built here is affected; ``self.policy_kwargs`` (saved with the model) stays as given.
        user_kwargs = self.policy_kwargs
        if (
            "optimizer_kwargs" not in user_kwargs
            and user_kwargs.get("optimizer_class", th.optim.Adam) is th.optim.Adam
            and self.device.type in ("cpu", "cuda")
        ):
            self.policy_kwargs = {**user_kwargs, "optimizer_kwargs": {"eps": 1e-5, "fused": True}}
        try:
            super()._setup_model()
        finally:
            self.policy_kwargs = user_kwargs

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "last_trust_region_result"]

    # ------------------------------------------------------------------------------------------------------------------
    # Rollouts
    # ------------------------------------------------------------------------------------------------------------------
    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """Collect ``n_rollout_steps`` steps per env into ``rollout_buffer`` (same behaviour as SB3's).

        Same steps, callbacks, local variable names, time-limit bootstrap and random draws as
        ``OnPolicyAlgorithm.collect_rollouts``, but leaner: SB3's own policies skip the distribution objects (see
        ``_fast_rollout_step``), the time-limit loop runs only when an episode ended, and returns / advantages are
        computed by the core (:func:`pg_extras.gae` or :func:`pg_extras.returns_to_go`).
        """
        assert self._last_obs is not None, "No previous observation was provided"
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)

        callback.on_rollout_start()
        fast_step = _fast_rollout_step(self.policy)
        policy_step = self.policy if fast_step is None else fast_step
        grad_mode = th.no_grad if fast_step is None else th.inference_mode
        is_box = isinstance(self.action_space, spaces.Box)
        is_discrete = isinstance(self.action_space, spaces.Discrete)
        add_to_buffer = _direct_add(rollout_buffer) if type(rollout_buffer) is RolloutBuffer else rollout_buffer.add

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)

            with grad_mode():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs = policy_step(obs_tensor)
            actions = actions.cpu().numpy()

            clipped_actions = actions
            if is_box:
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(actions, self.action_space.low, self.action_space.high)  # type: ignore[union-attr]

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            if is_discrete:
                actions = actions.reshape(-1, 1)

            if dones.any():
                # Time-limit truncation: bootstrap with the value of the final observation (SB3 GH#633)
                for idx, done in enumerate(dones):
                    if (
                        done
                        and infos[idx].get("terminal_observation") is not None
                        and infos[idx].get("TimeLimit.truncated", False)
                    ):
                        terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                        with th.no_grad():
                            terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                        rewards[idx] += self.gamma * terminal_value

            add_to_buffer(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]

        self._compute_returns_and_advantage(rollout_buffer, last_values=values, dones=dones)

        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _compute_returns_and_advantage(self, rollout_buffer: RolloutBuffer, last_values: th.Tensor, dones: np.ndarray) -> None:
        """Fill ``rollout_buffer.advantages`` / ``.returns`` with the chosen estimator (core functions, no step loop).

        SB3's buffer stores time-major ``[n_steps, n_envs]`` arrays; a time-limit bootstrap is already in the reward of
        the truncated step, so every episode end is a terminal for the estimator (as in SB3's own GAE).
        A user ``rollout_buffer_class`` that overrides ``compute_returns_and_advantage`` keeps its own method for
        ``"gae"`` (as with sb3-contrib).
        """
        if (
            self.advantage_estimator == "gae"
            and type(rollout_buffer).compute_returns_and_advantage is not RolloutBuffer.compute_returns_and_advantage
        ):
            rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
            return
        values = th.as_tensor(rollout_buffer.values, dtype=th.float64)
        rewards = th.as_tensor(rollout_buffer.rewards, dtype=th.float64)
        starts = th.as_tensor(rollout_buffer.episode_starts)
        done = th.empty(values.shape, dtype=th.bool)
        done[:-1] = starts[1:] > 0.5
        done[-1] = th.as_tensor(np.asarray(dones)).reshape(-1).to(th.bool)
        next_values = next_values_from_values(values, last_values.detach().to("cpu", th.float64).reshape(-1))
        if self.advantage_estimator == "gae":
            advantages, returns = gae(rewards, values, next_values, done, gamma=self.gamma, gae_lambda=self.gae_lambda)
        else:
            returns = returns_to_go(rewards, done, gamma=self.gamma, next_values=next_values)
            advantages = returns - values
        rollout_buffer.advantages = advantages.numpy().astype(np.float32)
        rollout_buffer.returns = returns.numpy().astype(np.float32)

    # ------------------------------------------------------------------------------------------------------------------
    # Update
    # ------------------------------------------------------------------------------------------------------------------
    def _rollout_tensors(self) -> dict[str, Any]:
        """The rollout buffer as flat ``[n_steps * n_envs, ...]`` tensors on ``self.device`` (time-major order)."""
        buf = self.rollout_buffer
        n = buf.buffer_size * buf.n_envs
        lead = 1 if buf.generator_ready else 2  # a call to buf.get() (e.g. by a callback) already flattened the arrays

        def flat(array: np.ndarray, scalar: bool = False) -> th.Tensor:
            tensor = th.as_tensor(array.reshape(n, *array.shape[lead:])).to(self.device)
            return tensor.reshape(n) if scalar else tensor

        obs = (
            {k: flat(v) for k, v in buf.observations.items()} if isinstance(buf.observations, dict) else flat(buf.observations)
        )
        actions = flat(buf.actions)
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        else:
            actions = actions.float()  # as SB3's buffer samples
        return {
            "observations": obs,
            "actions": actions,
            "old_log_prob": flat(buf.log_probs, scalar=True).float(),
            "advantages": flat(buf.advantages, scalar=True).float(),
            "returns": flat(buf.returns, scalar=True).float(),
        }

    @staticmethod
    def _index(obs: PyTorchObs, idx: th.Tensor) -> PyTorchObs:
        return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]

    @staticmethod
    def _slice(obs: PyTorchObs, start: int, end: int) -> PyTorchObs:
        return {k: v[start:end] for k, v in obs.items()} if isinstance(obs, dict) else obs[start:end]

    def _train_actor(
        self, obs: PyTorchObs, actions: th.Tensor, old_log_prob: th.Tensor, advantages: th.Tensor
    ) -> tuple[TrustRegionResult, list[nn.Parameter]]:
        """One trust-region step of the actor (seed 2.4.2 step 3); returns the result and the actor parameters.

        The Fisher-vector products use the Gauss-Newton form ``J^T M J v`` on the distribution parameters (exact at
        ``theta_old``): through :class:`pg_extras.MlpLinearization` for SB3's default MLP actor (:func:`_mlp_actor_fvp`),
        else by autograd (:func:`pg_extras.distribution_fvp_fn`); distribution types without a known Fisher fall back
        to the double backward of the KL.
        """
        policy = self.policy
        # One forward with a graph; the old policy is the same forward's distribution, detached (no second pass).
        distribution = policy.get_distribution(obs)
        log_prob = distribution.log_prob(actions)
        new_dists = _torch_distributions(distribution)
        old_dists = [_detached(d) for d in new_dists]
        if any(d is None for d in old_dists):  # a distribution type without a known detached copy: recompute
            with th.no_grad():
                old_dists = _torch_distributions(policy.get_distribution(obs))
        surrogate = (importance_ratio(log_prob, old_log_prob) * advantages).mean()
        actor_params = reachable_parameters([log_prob], list(policy.parameters()))
        if not actor_params:
            raise ValueError("No policy parameter reaches the action distribution: the policy has no trainable actor.")
        fvp = _mlp_actor_fvp(policy, obs, actor_params, new_dists)
        if fvp is None:
            fvp = distribution_fvp_fn(new_dists, actor_params, batch_dims=1)
        # The KL at theta_old (zero) is only differentiated when there is no Gauss-Newton product for this distribution.
        kl = th.zeros((), device=log_prob.device) if fvp is not None else _per_sample_kl(old_dists, new_dists).mean()  # type: ignore[arg-type]
        first = [(surrogate, kl)]

        def evaluate() -> tuple[th.Tensor, th.Tensor]:
            if first:
                return first.pop()
            dist = policy.get_distribution(obs)
            lp = dist.log_prob(actions)
            return (importance_ratio(lp, old_log_prob) * advantages).mean(), _per_sample_kl(
                old_dists,  # type: ignore[arg-type]
                _torch_distributions(dist),
            ).mean()

        result = trust_region_step(
            actor_params,
            evaluate,
            max_kl=self.target_kl,
            cg_max_steps=self.cg_max_steps,
            cg_damping=self.cg_damping,
            shrinking_factor=self.line_search_shrinking_factor,
            line_search_max_iter=self.line_search_max_iter,
            fvp=fvp,
        )
        return result, actor_params

    def _train_critic(self, obs: PyTorchObs, returns: th.Tensor, actor_params: Sequence[nn.Parameter]) -> float:
        """``n_critic_updates`` epochs of minibatch MSE regression of ``predict_values`` on ``returns``.

        Gradients are computed for critic-only parameters (reached by the value graph, not by the actor), so shared
        layers and every actor parameter stay untouched. Returns the mean value loss (NaN if no update ran).
        Same updates as ``sb3_contrib.TRPO`` (one shuffle per epoch, ``batch_size`` minibatches, one optimizer step
        each), with less per-step overhead: a parameter-free features extractor runs once for the whole batch
        (:func:`_critic_path`), the step touches only the critic's parameters (:func:`_critic_optimizer`) and the
        losses are averaged once at the end (no per-step synchronisation).
        """
        policy = self.policy
        n = returns.shape[0]
        if self.n_critic_updates == 0 or n == 0:
            return float("nan")
        inputs, values_of = _critic_path(policy, obs)
        actor_ids = {id(p) for p in actor_params}
        critic_params: list[nn.Parameter] | None = None
        optimizer: th.optim.Optimizer = policy.optimizer
        loss_sum = th.zeros((), device=returns.device)
        n_steps = 0
        manual_step: Callable[[th.Tensor, th.Tensor], th.Tensor] | None = None
        for _ in range(self.n_critic_updates):
            # One shuffle per epoch, then contiguous minibatches (views, no per-minibatch gather)
            perm = th.randperm(n, device=self.device)
            inputs_epoch, returns_epoch = self._index(inputs, perm), returns[perm]
            for start in range(0, n, self.batch_size):
                end = start + self.batch_size
                if manual_step is not None:
                    for param in critic_params:  # type: ignore[union-attr]
                        param.grad = None
                    loss_sum += manual_step(self._slice(inputs_epoch, start, end), returns_epoch[start:end])
                    optimizer.step()
                    n_steps += 1
                    continue
                values = values_of(self._slice(inputs_epoch, start, end)).flatten()
                value_loss = F.mse_loss(returns_epoch[start:end], values)
                if critic_params is None:
                    reached = reachable_parameters([values], list(policy.parameters()))
                    critic_params = [p for p in reached if id(p) not in actor_ids and p.requires_grad]
                    if not critic_params:
                        raise ValueError(
                            "predict_values reaches no critic-only parameter, so the critic cannot be fitted without "
                            "moving the actor: give the policy its own value head / value layers, or pass "
                            "n_critic_updates=0."
                        )
                    policy.optimizer.zero_grad(set_to_none=True)
                    optimizer = _critic_optimizer(policy.optimizer, critic_params)
                    if values_of is not policy.predict_values:
                        manual_step = _mlp_value_step(policy, critic_params)
                for param in critic_params:
                    param.grad = None
                value_loss.backward(inputs=critic_params)
                optimizer.step()
                loss_sum += value_loss.detach()
                n_steps += 1
        return float(loss_sum) / n_steps

    def train(self) -> None:
        """Update the policy (one trust-region step) and the critic on the current rollout buffer."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)

        data = self._rollout_tensors()
        obs, actions = data["observations"], data["actions"]
        old_log_prob, advantages = data["old_log_prob"], data["advantages"]
        if self.sub_sampling_factor > 1:
            idx = th.randperm(advantages.shape[0], device=self.device)[:: self.sub_sampling_factor]
            obs, actions, old_log_prob, advantages = self._index(obs, idx), actions[idx], old_log_prob[idx], advantages[idx]
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        result, actor_params = self._train_actor(obs, actions, old_log_prob, advantages)
        self.last_trust_region_result = result
        value_loss = self._train_critic(data["observations"], data["returns"], actor_params)

        self._n_updates += 1
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs (sb3-contrib's keys)
        self.logger.record("train/policy_objective", result.surrogate_after)
        self.logger.record("train/value_loss", value_loss)
        self.logger.record("train/kl_divergence_loss", result.kl)
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/is_line_search_success", float(result.accepted))
        self.logger.record("train/line_search_steps", result.steps_tried)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def learn(
        self: SelfTRPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "TRPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfTRPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
