"""Trust Region Policy Optimization (TRPO) for Stable-Baselines3, a drop-in for ``sb3_contrib.TRPO``.

Maths: docs/maths.md#4-importance-ratio-and-trpo and Schulman et al. 2015, "Trust Region Policy Optimization"
(https://arxiv.org/abs/1502.05477). The rollouts fill SB3's ``RolloutBuffer`` through the base's collection loop
(the one loop of every algorithm; the buffer's own ``compute_returns_and_advantage``); the policy step is
:func:`pg_extras.trust_region_step` on :func:`pg_extras.trust_region_surrogate` and :func:`pg_extras.action_kl`, with
Gauss-Newton Fisher-vector products from :func:`pg_extras.mlp_fvp_fn` (MLP actors, no autograd) or
:func:`pg_extras.gauss_newton_fvp_fn`. This module only moves data between SB3 and the core.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from torch import nn

from pg_extras import (
    DEFAULT_KL_REDUCTION,
    KL_REDUCTIONS,
    TrustRegionResult,
    TrustRegionSettings,
    action_kl,
    distribution_fisher,
    explained_variance,
    gauss_newton_fvp_fn,
    mlp_fvp_fn,
    reachable_parameters,
    regress_critic,
    standardize,
    trust_region_surrogate,
)
from pg_extras.validation import check_bool, check_choice, check_finite, check_float, check_int
from sb3_pg_extras.common.episodic import EpisodicOnPolicyAlgorithm
from sb3_pg_extras.common.policies import (
    OBSERVATIONS_HINT,
    ActorOnlyCnnPolicy,
    ActorOnlyMultiInputPolicy,
    ActorOnlyPolicy,
)
from sb3_pg_extras.trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["ADVANTAGE_ESTIMATORS", "TRPO", "TrainingBatch", "reachable_parameters"]


#: Advantage estimators of :class:`TRPO` (``advantage_estimator``).
ADVANTAGE_ESTIMATORS = ("gae", "mc", "group")
#: The policies of ``advantage_estimator="group"`` (critic-free TRPO), by alias.
CRITIC_FREE_POLICIES = {
    "MlpPolicy": ActorOnlyPolicy,
    "CnnPolicy": ActorOnlyCnnPolicy,
    "MultiInputPolicy": ActorOnlyMultiInputPolicy,
}
_RESCALE = "rescale the rewards (e.g. VecNormalize(norm_reward=True)) or lower gamma"


class TrainingBatch(NamedTuple):
    """One update's data as flat tensors (what :meth:`TRPO._training_batch` returns)."""

    observations: PyTorchObs
    actions: th.Tensor
    old_log_prob: th.Tensor  # log pi_old(a|s) stored at collection
    advantages: th.Tensor
    returns: th.Tensor  # the critic's regression targets
    old_values: th.Tensor | None  # V(s) at collection (for train/explained_variance)


def _torch_distributions(distribution: Distribution) -> list[th.distributions.Distribution]:
    """The torch distributions inside an SB3 ``Distribution`` (several for ``MultiCategoricalDistribution``)."""
    inner = distribution.distribution
    return list(inner) if isinstance(inner, (list, tuple)) else [inner]


def _index(obs: PyTorchObs, idx: th.Tensor) -> PyTorchObs:
    return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]


# ----------------------------------------------------------------------------------------------------------------------
# The algorithm
# ----------------------------------------------------------------------------------------------------------------------
class TRPO(EpisodicOnPolicyAlgorithm):
    """Trust Region Policy Optimization (TRPO), a drop-in replacement of ``sb3_contrib.TRPO``.

    Paper: https://arxiv.org/abs/1502.05477; maths: docs/maths.md#4-importance-ratio-and-trpo. Each update maximises
    the surrogate ``mean(A * pi(a|s) / pi_old(a|s))`` subject to ``mean KL(pi_old || pi) <= target_kl``: gradient
    ``g``, conjugate gradient for ``x ~ F^-1 g`` with Fisher-vector products (plus ``cg_damping``), the step
    ``sqrt(2 target_kl / x^T F x) x`` and a backtracking line search that accepts only a step that improves the
    surrogate and satisfies the KL bound (else the parameters are restored). The critic is then fitted separately
    (``n_critic_updates`` epochs of minibatch MSE on the returns) and never moves an actor parameter.

    Same constructor arguments, defaults, logger keys and save format as ``sb3_contrib.TRPO``, with these differences:

    * the KL is ``KL(pi_old || pi)`` (as in the paper), where sb3-contrib uses ``KL(pi || pi_old)``; both have the same
      Hessian at ``theta_old``, hence the same step; only the line search's KL test differs (by third-order terms: it
      can accept one backtracking step more or fewer than sb3-contrib, either way). Over the action dimensions the KL
      is reduced as sb3-contrib does by default (``kl_reduction="mean"``: averaged over Box / MultiBinary dimensions,
      summed over MultiDiscrete sub-actions), so ``target_kl`` and ``cg_damping`` mean what rl-zoo3's tuned values
      assume; ``kl_reduction="joint"`` is the exact KL of the joint action distribution (docs/maths.md#kl-reduction);
    * actor and critic parameters are told apart structurally (the parameters the action distribution's autograd
      graph reaches are the actor), not by the substring ``"value"`` in parameter names;
    * the Fisher-vector products are the Gauss-Newton form ``J^T M J v``, equal at ``theta_old`` to the Hessian of the
      KL that sb3-contrib differentiates twice; for MLP actors (``nn.Linear`` + ``Tanh`` / ``ReLU``, a features
      extractor without parameters) ``J v`` / ``J^T u`` are computed without autograd (:func:`pg_extras.mlp_fvp_fn`);
      the step length reuses the conjugate gradient's products (``cg_max_steps`` products, not one more);
    * bad arguments raise ``ValueError`` at construction; non-finite returns, advantages, values or log-probabilities
      raise an error naming them;
    * extra arguments, after sb3-contrib's: ``advantage_estimator`` picks the advantage estimator, and the group options
      (``group_size``, ``advantage_mode``, ``advantage_scale``, ``rloo``, ``group_schedule``, ``max_policy_lag``,
      ``max_episode_steps``) configure ``advantage_estimator="group"``, as in :class:`~sb3_pg_extras.GRPO`.

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
    :param target_kl: The trust-region radius: bound on the mean ``KL(pi_old || pi)`` of an update, finite and > 0.
        Should be small for stability. Values like 0.01, 0.05.
    :param sub_sampling_factor: Sub-sample the batch of the policy step to make computation faster
        (see p40-42 of John Schulman thesis http://joschu.net/docs/thesis.pdf); at most ``n_steps * n_envs / 2``
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: the verbosity level: 0 no output, 1 info, 2 debug
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
        Setting it to auto, the code will be run on the GPU if possible.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    :param advantage_estimator: ``"gae"`` (default): SB3's rollouts and generalised advantage estimation with
        ``gae_lambda``; ``"mc"``: ``A_t = G_t - V(s_t)`` over whole episodes (the episodic base: episodes cut by the
        rollout end are carried over, a time-limit truncation is bootstrapped with ``V(s_final)``; the critic regresses
        on ``G_t``, docs/maths.md#3-baselines-and-gae); ``"group"``: critic-free TRPO on group-relative advantages
        (docs/maths.md#6-grpo): the policy has no value head, nothing is fitted or saved for a critic.
    :param group_size: episodes per group (``advantage_estimator="group"``).
    :param advantage_mode: group advantages: ``"outcome"``, ``"process"``, ``"return_to_go"`` or any other mode of
        :class:`~sb3_pg_extras.GRPO` (e.g. ``"remax"``: one extra greedy episode per group as the baseline).
    :param advantage_scale: group advantages: ``"group"``, ``"batch"`` or ``"none"``.
    :param rloo: group advantages: leave-one-out baseline.
    :param group_schedule: ``"async"`` or ``"lockstep"`` (see :class:`~sb3_pg_extras.GRPO`).
    :param max_policy_lag: drop groups whose members span more than this many updates.
    :param max_episode_steps: ``"mc"`` / ``"group"``: raise when an episode runs this many steps without ending.
    :param kl_reduction: how the KL of one update reduces over the action dimensions: ``"mean"`` (default,
        sb3-contrib's: the per-dimension KLs of a Box / MultiBinary action are averaged) or ``"joint"`` (summed: the
        exact KL of the joint distribution, so the same ``target_kl`` is a radius ``action_dim`` times smaller, and the
        same ``cg_damping`` is relatively ``action_dim`` times weaker; docs/maths.md#kl-reduction). One-dimensional and
        Discrete / MultiDiscrete actions are the same either way.

    Example::

        >>> from sb3_pg_extras import TRPO
        >>> model = TRPO("MlpPolicy", "CartPole-v1", n_steps=512, n_critic_updates=20, cg_damping=1e-3)  # doctest: +SKIP
        >>> model.learn(50_000)  # doctest: +SKIP
    """

    estimators: ClassVar[tuple[str, ...]] = ADVANTAGE_ESTIMATORS
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
        group_size: int = 8,
        advantage_mode: str = "outcome",
        advantage_scale: str = "group",
        rloo: bool = False,
        group_schedule: str = "async",
        max_policy_lag: int | None = 16,
        max_episode_steps: int | None = None,
        kl_reduction: str = DEFAULT_KL_REDUCTION,
    ):
        check_choice("advantage_estimator", advantage_estimator, ADVANTAGE_ESTIMATORS)
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, KL_REDUCTIONS)
        if advantage_estimator != "gae" and rollout_buffer_class is not None:
            raise ValueError(
                f"advantage_estimator={advantage_estimator!r} collects whole episodes into its own buffer: pass "
                "rollout_buffer_class=None, or use advantage_estimator='gae' with your buffer class."
            )
        if advantage_estimator == "group" and isinstance(policy, str) and policy in self.policy_aliases:
            policy = CRITIC_FREE_POLICIES[policy]  # critic-free TRPO: no value head
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=0.0,  # no entropy bonus in TRPO
            max_grad_norm=None,  # the critic's gradients are not clipped (sb3-contrib)
            batch_size=batch_size,
            advantage_estimator=advantage_estimator,
            group_size=group_size,
            advantage_mode=advantage_mode,
            advantage_scale=advantage_scale,
            rloo=rloo,
            group_schedule=group_schedule,
            max_policy_lag=max_policy_lag,
            max_episode_steps=max_episode_steps,
            use_sde=check_bool("use_sde", use_sde),
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
        )
        self.bootstrap_truncated = advantage_estimator == "mc"  # V(s_final) at time-limit truncations
        self.normalize_advantage = check_bool("normalize_advantage", normalize_advantage)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.cg_max_steps = check_int("cg_max_steps", cg_max_steps, minimum=1)
        self.cg_damping = check_float("cg_damping", cg_damping, low=0.0)
        self.line_search_shrinking_factor = check_float(
            "line_search_shrinking_factor", line_search_shrinking_factor, 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        self.line_search_max_iter = check_int("line_search_max_iter", line_search_max_iter, minimum=1)
        self.target_kl = check_float(
            "target_kl", target_kl, low=0.0, low_inclusive=False, hint="the trust-region radius, a finite bound such as 0.01"
        )
        self.n_critic_updates = check_int("n_critic_updates", n_critic_updates, minimum=0)
        self.sub_sampling_factor = check_int("sub_sampling_factor", sub_sampling_factor, minimum=1)
        if self.env is not None:
            buffer_size = self.env.num_envs * self.n_steps
            if self.normalize_advantage and buffer_size <= 1:
                raise ValueError(
                    f"n_steps * n_envs must be greater than 1 to normalize the advantage (n_steps={self.n_steps}, "
                    f"n_envs={self.env.num_envs}): increase n_steps or pass normalize_advantage=False."
                )
            if self.sub_sampling_factor > 1 and math.ceil(buffer_size / self.sub_sampling_factor) < 2:
                raise ValueError(
                    f"sub_sampling_factor={self.sub_sampling_factor} would leave fewer than 2 of the n_steps * n_envs = "
                    f"{buffer_size} steps for the policy step: use sub_sampling_factor <= {max(buffer_size // 2, 1)} "
                    "or collect more steps."
                )
            if buffer_size % self.batch_size > 0:
                warnings.warn(
                    f"You have specified a mini-batch size of {self.batch_size}, but because the `RolloutBuffer` is of "
                    f"size `n_steps * n_envs = {buffer_size}`, after every {buffer_size // self.batch_size} untruncated "
                    f"mini-batches, there will be a truncated mini-batch of size {buffer_size % self.batch_size}\n"
                    f"We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
                    f"Info: (n_steps={self.n_steps} and n_envs={self.env.num_envs})",
                    stacklevel=2,
                )
        #: What the last policy step did (accepted, KL, surrogate gain, ...); ``None`` before the first update.
        self.last_trust_region_result: TrustRegionResult | None = None

        if _init_setup_model:
            self._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "last_trust_region_result"]

    @property
    def core_estimator(self) -> str:
        """``"mc"`` with a critic is the learned-baseline estimator ``G_t - V(s_t)``."""
        return "baseline" if self.advantage_estimator == "mc" else self.advantage_estimator

    def _training_batch(self) -> TrainingBatch | None:
        """The data of this update, as flat tensors: the one place :meth:`train` reads the rollout from.

        ``"gae"``: SB3's rollout buffer, filled by the base's collection loop and the buffer's own
        ``compute_returns_and_advantage``. ``"mc"`` / ``"group"``: the whole episodes of the episodic base and
        :func:`pg_extras.estimate_advantages`. ``None``: no episode (or group) is complete yet.
        """
        if self.episodic:
            episodes = self._training_episodes()
            if episodes is None:
                return None
            values = None
            if not self.uses_groups:
                with th.no_grad():
                    values = self.policy.predict_values(episodes.observations).flatten()
                check_finite("TRPO values", values, hint="the critic diverged: lower learning_rate or " + _RESCALE)
            estimate = self._advantages(episodes, values)
            returns = None if self.uses_groups else estimate.returns
            actions = self._policy_actions(episodes.actions)
            return TrainingBatch(episodes.observations, actions, episodes.old_log_prob, estimate.advantages, returns, values)
        rewards = self.rollout_buffer.rewards
        if not np.isfinite(rewards).all():  # before anything derived from them (returns, advantages) is blamed
            check_finite(
                "TRPO rollout rewards",
                th.as_tensor(rewards),
                hint="the env returned NaN or infinite rewards: fix the env's reward or wrap it to clip / replace them",
            )
        observations = self.rollout_buffer.observations
        for obs in observations.values() if isinstance(observations, dict) else [observations]:
            if not np.isfinite(obs).all():
                check_finite("observations", th.as_tensor(obs), hint=OBSERVATIONS_HINT)
        data = next(self.rollout_buffer.get(batch_size=None))
        actions = data.actions.long().flatten() if isinstance(self.action_space, spaces.Discrete) else data.actions
        for name, tensor, hint in (
            ("returns", data.returns, _RESCALE),
            ("advantages", data.advantages, _RESCALE),
            ("values", data.old_values, "the critic diverged: lower learning_rate or " + _RESCALE),
            ("log_prob", data.old_log_prob, "the policy's outputs at collection were not finite: normalise the observations"),
        ):
            check_finite(f"TRPO rollout {name}", tensor, hint=hint)
        return TrainingBatch(data.observations, actions, data.old_log_prob, data.advantages, data.returns, data.old_values)

    def _fisher_vector_product(
        self, observations: PyTorchObs, distributions: list[th.distributions.Distribution], actor_params: list[nn.Parameter]
    ) -> Any:
        """``v -> J^T M J v`` of the actor at ``theta_old`` (docs/maths.md#fisher-vector-products).

        Without autograd for an MLP actor (:func:`pg_extras.mlp_fvp_fn` on ``mlp_extractor.policy_net`` and
        ``action_net``), else by autograd (:func:`pg_extras.gauss_newton_fvp_fn`); ``None`` (double backward of the
        KL) for a distribution type without a known Fisher.
        """
        fisher = distribution_fisher(distributions, kl_reduction=self.kl_reduction)
        if fisher is None:
            return None
        actor_net = getattr(getattr(self.policy, "mlp_extractor", None), "policy_net", None)
        action_net = getattr(self.policy, "action_net", None)
        if isinstance(actor_net, nn.Module) and isinstance(action_net, nn.Module):
            with th.no_grad():
                features = self.policy.extract_features(observations)  # type: ignore[operator]
            features = features[0] if isinstance(features, tuple) else features  # (pi, vf) when not shared
            fvp = mlp_fvp_fn([actor_net, action_net], features, actor_params, fisher)
            if fvp is not None:
                return fvp
        return gauss_newton_fvp_fn(fisher[0], actor_params, fisher[1])

    def train(self) -> None:
        """Update the policy (one trust-region step) and then the critic on the current rollout."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        batch = self._training_batch()
        if batch is None:
            return

        # The batch of the policy step: optionally sub-sampled, advantages normalised
        observations, actions, old_log_prob, advantages = batch[:4]
        if self.sub_sampling_factor > 1:
            idx = th.randperm(len(advantages), device=advantages.device)[:: self.sub_sampling_factor]
            observations, actions, old_log_prob, advantages = (
                _index(observations, idx),
                *(t[idx] for t in (actions, old_log_prob, advantages)),
            )
        if self.normalize_advantage:
            advantages = standardize(advantages)

        # Policy step: surrogate and KL at theta_old, then pg_extras.trust_region_step (CG + line search)
        distribution = self.policy.get_distribution(observations)
        log_prob = distribution.log_prob(actions)
        check_finite(
            "TRPO log_prob", log_prob.detach(), hint="the policy's outputs are not finite: normalise the observations"
        )
        distributions = _torch_distributions(distribution)  # (before the next call: SB3 reuses its Distribution object)
        with th.no_grad():
            old_distributions = _torch_distributions(self.policy.get_distribution(observations))
        actor_params = reachable_parameters([log_prob], list(self.policy.parameters()))
        if not actor_params:
            raise ValueError("No policy parameter reaches the action distribution: the policy has no trainable actor.")
        policy_objective = trust_region_surrogate(log_prob, old_log_prob, advantages)
        kl_div = action_kl(old_distributions, distributions, kl_reduction=self.kl_reduction)

        def evaluate() -> tuple[th.Tensor, th.Tensor]:  # at the line search's trial parameters
            new = self.policy.get_distribution(observations)
            surrogate = trust_region_surrogate(new.log_prob(actions), old_log_prob, advantages)
            return surrogate, action_kl(old_distributions, _torch_distributions(new), kl_reduction=self.kl_reduction)

        settings = TrustRegionSettings(
            self.target_kl, self.cg_max_steps, self.cg_damping, self.line_search_shrinking_factor, self.line_search_max_iter
        )
        fvp = self._fisher_vector_product(observations, distributions, actor_params)
        result = settings.step(actor_params, evaluate, fvp=fvp, initial=(policy_objective, kl_div))
        self.last_trust_region_result = result

        # Critic: n_critic_updates epochs of minibatch MSE on the returns, with the policy's optimizer
        value_losses = []
        if batch.returns is not None:  # (the critic step never moves the actor: its shared parameters are frozen)
            value_losses = regress_critic(
                lambda idx: self.policy.predict_values(_index(batch.observations, idx)).flatten(),
                batch.returns,
                self.policy.optimizer,
                self.n_critic_updates,
                self.batch_size,
                frozen=actor_params,
                hint="the critic diverged: lower learning_rate or " + _RESCALE,
            )

        self._finish_update()
        explained_var = float("nan")
        if batch.old_values is not None and batch.returns is not None:
            explained_var = explained_variance(batch.old_values.flatten(), batch.returns.flatten())

        # Logs (sb3-contrib's keys)
        self.logger.record("train/policy_objective", result.surrogate_after)
        self.logger.record("train/value_loss", float(np.mean(value_losses)) if value_losses else float("nan"))
        self.logger.record("train/kl_divergence_loss", result.kl)
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/is_line_search_success", float(result.accepted))
        self.logger.record("train/line_search_steps", result.steps_tried)
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
