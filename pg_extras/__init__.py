"""pg_extras: the shared policy-gradient maths of pg-extras (pure torch, no RL-framework import).

Example::

    >>> import torch
    >>> from pg_extras import returns_to_go
    >>> returns_to_go(torch.ones(3), torch.tensor([False, False, True]), gamma=1.0)
    tensor([3., 2., 1.])
"""

from pg_extras import validation
from pg_extras.episodes import EpisodeLayout
from pg_extras.estimators import ADVANTAGE_ESTIMATORS, CRITIC_ESTIMATORS, AdvantageEstimate, estimate_advantages
from pg_extras.group import (
    ADVANTAGE_MODES,
    ADVANTAGE_SCALES,
    GroupAdvantages,
    gpg_alpha,
    group_ids_from_size,
    group_normalize,
    group_relative_advantages,
    remax_advantages,
)
from pg_extras.kl import KL_ESTIMATORS, categorical_kl, exact_kl, kl_estimate
from pg_extras.mlp import MLP_ACTIVATIONS, MlpLinearization, mlp_forward, mlp_layers
from pg_extras.objectives import (
    RATIO_RULES,
    UPDATE_RULES,
    explained_variance,
    policy_gradient_loss,
    policy_loss,
    ratio_rule_options,
    regress_critic,
    regularized_loss,
    standardize,
)
from pg_extras.policy_ops import (
    DEFAULT_KL_REDUCTION,
    KL_REDUCTIONS,
    action_dims,
    action_kl,
    diag_gaussian_log_prob,
    entropy_or_estimate,
    joint_kl,
    reachable_parameters,
    sample_categorical,
    sample_diag_gaussian,
    trust_region_surrogate,
)
from pg_extras.returns import (
    complete_episode_mask,
    discounted_cumsum,
    episode_returns,
    gae,
    next_values_from_values,
    returns_to_go,
)
from pg_extras.scheduler import CompletedGroup, GroupHarvest, GroupJob, GroupScheduler
from pg_extras.signal import NoSignalWarning, SignalMonitor
from pg_extras.surrogate import (
    IMPORTANCE_SAMPLING_LEVELS,
    LOSS_AGGREGATIONS,
    aggregate_loss,
    cispo_loss,
    clipped_surrogate_loss,
    importance_ratio,
    log_ratio,
    sapo_loss,
    sequence_log_ratio,
)
from pg_extras.trust_region import (
    TrustRegionResult,
    TrustRegionSettings,
    conjugate_gradient,
    distribution_fisher,
    distribution_fvp_fn,
    fisher_vector_product_fn,
    flat_grad,
    gauss_newton_fvp_fn,
    get_flat_params,
    line_search,
    mlp_fvp_fn,
    set_flat_params,
    trust_region_step,
)
from pg_extras.variants import informative_groups, mask_truncated_episodes, mix_parameters_, top_entropy_mask
from pg_extras.version import __version__

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "ADVANTAGE_MODES",
    "ADVANTAGE_SCALES",
    "CRITIC_ESTIMATORS",
    "DEFAULT_KL_REDUCTION",
    "IMPORTANCE_SAMPLING_LEVELS",
    "KL_ESTIMATORS",
    "KL_REDUCTIONS",
    "LOSS_AGGREGATIONS",
    "MLP_ACTIVATIONS",
    "RATIO_RULES",
    "UPDATE_RULES",
    "AdvantageEstimate",
    "CompletedGroup",
    "EpisodeLayout",
    "GroupAdvantages",
    "GroupHarvest",
    "GroupJob",
    "GroupScheduler",
    "MlpLinearization",
    "NoSignalWarning",
    "SignalMonitor",
    "TrustRegionResult",
    "TrustRegionSettings",
    "__version__",
    "action_dims",
    "action_kl",
    "aggregate_loss",
    "categorical_kl",
    "cispo_loss",
    "clipped_surrogate_loss",
    "complete_episode_mask",
    "conjugate_gradient",
    "diag_gaussian_log_prob",
    "discounted_cumsum",
    "distribution_fisher",
    "distribution_fvp_fn",
    "entropy_or_estimate",
    "episode_returns",
    "estimate_advantages",
    "exact_kl",
    "explained_variance",
    "fisher_vector_product_fn",
    "flat_grad",
    "gae",
    "gauss_newton_fvp_fn",
    "get_flat_params",
    "gpg_alpha",
    "group_ids_from_size",
    "group_normalize",
    "group_relative_advantages",
    "importance_ratio",
    "informative_groups",
    "joint_kl",
    "kl_estimate",
    "line_search",
    "log_ratio",
    "mask_truncated_episodes",
    "mix_parameters_",
    "mlp_forward",
    "mlp_fvp_fn",
    "mlp_layers",
    "next_values_from_values",
    "policy_gradient_loss",
    "policy_loss",
    "ratio_rule_options",
    "reachable_parameters",
    "regress_critic",
    "regularized_loss",
    "remax_advantages",
    "returns_to_go",
    "sample_categorical",
    "sample_diag_gaussian",
    "sapo_loss",
    "sequence_log_ratio",
    "set_flat_params",
    "standardize",
    "top_entropy_mask",
    "trust_region_step",
    "trust_region_surrogate",
    "validation",
]
