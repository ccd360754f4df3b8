"""RL Zoo (rl-zoo3) integration: train, evaluate and tune the pg-extras algorithms from YAML hyperparameter files.

``train``, ``enjoy`` and ``optimize`` take exactly rl-zoo3's flags; this module only registers our algorithms in
rl-zoo3 before it parses its arguments and points it at our packaged ``zoo_configs/<algo>.yml`` when no ``-conf``
is given. ``optimize`` is rl-zoo3's ``train -optimize`` with Optuna samplers for our algorithms' own
hyperparameters (GRPO group size, ``beta``, ``clip_range_high``; TRPO ``target_kl``, ...).

Algorithm names (``--algo``):

==================== =============================================== ===============================================
name                 class                                           hyperparameters (without ``-conf``)
==================== =============================================== ===============================================
``reinforce``        :class:`sb3_pg_extras.REINFORCE`                ``zoo_configs/reinforce.yml``
``reinforce_baseline`` :class:`sb3_pg_extras.REINFORCEWithBaseline`  ``zoo_configs/reinforce_baseline.yml``
``trpo``             :class:`sb3_pg_extras.TRPO` (ours)              ``zoo_configs/trpo.yml``
``grpo``             :class:`sb3_pg_extras.GRPO`                     ``zoo_configs/grpo.yml``
``trpo_group``       :class:`sb3_pg_extras.TRPO`, critic-free        ``zoo_configs/trpo_group.yml``
``trpo_contrib``     ``sb3_contrib.TRPO`` (rl-zoo3's ``trpo``)       rl-zoo3's own ``hyperparams/trpo.yml``
==================== =============================================== ===============================================

All of rl-zoo3's other algorithms (``ppo``, ``a2c``, ...) stay available with rl-zoo3's own files.

Example::

    python -m sb3_pg_extras.zoo train --algo grpo --env CartPole-v1 -f logs
    python -m sb3_pg_extras.zoo enjoy --algo grpo --env CartPole-v1 -f logs --no-render
    python -m sb3_pg_extras.zoo optimize --algo grpo --env CartPole-v1 -n 50000 --n-trials 20 --sampler tpe
    python -m sb3_pg_extras.zoo train --algo trpo_contrib --env CartPole-v1   # sb3-contrib TRPO, side by side
    python -m sb3_pg_extras.zoo demo                                           # `make demo`

In Python, :func:`register_algorithms` makes the names above known to rl-zoo3 (``rl_zoo3.utils.ALGOS``,
``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER``/``HYPERPARAMS_CONVERTER``).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import dataclasses
import difflib
import importlib
import importlib.resources
import inspect
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import optuna
import yaml
from rl_zoo3 import hyperparams_opt as zoo_hyperparams_opt
from rl_zoo3 import train as zoo_train
from rl_zoo3 import utils as zoo_utils
from rl_zoo3.exp_manager import ExperimentManager
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import set_random_seed
from torch import nn

from sb3_pg_extras.registry import ALGORITHMS, REPORT_SEEDS, TUNING_SEEDS, held_out_seeds

__all__ = [
    "CONTRIB_TRPO",
    "HYPERPARAMS_CONVERTER",
    "HYPERPARAMS_SAMPLER",
    "PG_EXTRAS_ALGOS",
    "ZOO_ONLY_KEYS",
    "PGExtrasExperimentManager",
    "TrialOptions",
    "check_hyperparameters",
    "config_path",
    "main",
    "register_algorithms",
]

#: zoo name -> (module, class) of the pg-extras algorithms, imported lazily by :func:`register_algorithms`
#: (from the one registry, :data:`sb3_pg_extras.registry.ALGORITHMS`).
PG_EXTRAS_ALGOS: dict[str, tuple[str, str]] = {name: (e.module, e.class_name) for name, e in ALGORITHMS.items()}

#: zoo name under which ``sb3_contrib.TRPO`` stays reachable (rl-zoo3 itself calls it ``trpo``).
CONTRIB_TRPO = "trpo_contrib"

#: Keys of a zoo YAML entry that rl-zoo3 consumes itself; all other keys go to the algorithm constructor.
ZOO_ONLY_KEYS = frozenset(
    {
        "n_envs",
        "n_timesteps",
        "normalize",
        "env_wrapper",
        "vec_env_wrapper",
        "frame_stack",
        "callback",
        "monitor_kwargs",
        "env_kwargs",
        "noise_type",
        "noise_std",
    }
)

_COMMANDS = ("train", "enjoy", "optimize", "demo")
_ZOO_PASSED = frozenset({"self", "env", "seed", "verbose", "device", "tensorboard_log"})


class ZooError(ValueError):
    """Base of the errors of ``python -m sb3_pg_extras.zoo`` that are the user's to fix (printed without traceback)."""


class ZooUsageError(ZooError):
    """Bad command line: unknown command, algorithm or environment id."""


class ZooConfigError(ZooError):
    """Bad hyperparameter file or ``-params``: a key the algorithm does not accept, a missing entry."""


_IMPORT_ERRORS: dict[str, str] = {}


# --------------------------------------------------------------------------------------------------------------------
# Optuna samplers (same signature as rl_zoo3.hyperparams_opt: trial, n_actions, n_envs, additional_args)
# --------------------------------------------------------------------------------------------------------------------
_NET_ARCH = {
    "tiny": dict(pi=[64], vf=[64]),
    "small": dict(pi=[64, 64], vf=[64, 64]),
    "medium": dict(pi=[256, 256], vf=[256, 256]),
}
_ACTIVATION = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _convert_pg_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn raw Optuna parameters (``one_minus_gamma``, ``n_steps_pow``, ``net_arch`` names, ...) into constructor kwargs.

    Used both after sampling and by rl-zoo3 when it reloads a trial (``--trial-id``), so it must only read ``params``.
    """
    hyperparams = dict(params)
    for name in ("gamma", "gae_lambda"):
        if f"one_minus_{name}" in hyperparams:
            hyperparams[name] = 1.0 - hyperparams.pop(f"one_minus_{name}")
    for name in ("n_steps", "batch_size"):
        if f"{name}_pow" in hyperparams:
            hyperparams[name] = 2 ** hyperparams.pop(f"{name}_pow")
    policy_kwargs: dict[str, Any] = {}
    if "net_arch" in hyperparams:
        policy_kwargs["net_arch"] = _NET_ARCH[hyperparams.pop("net_arch")]
    if "activation_fn" in hyperparams:
        policy_kwargs["activation_fn"] = _ACTIVATION[hyperparams.pop("activation_fn")]
    if policy_kwargs:
        hyperparams["policy_kwargs"] = policy_kwargs
    return hyperparams


#: the widest ``1 - gamma`` the REINFORCE searches sample (``gamma >= 0.9``; rl-zoo3's own spaces stop at 0.03)
CRITIC_FREE_MAX_ONE_MINUS_GAMMA = 0.1


def _suggest_common(
    trial: optuna.Trial, discount: bool = True, gae: bool = False, max_one_minus_gamma: float = 0.03
) -> dict[str, Any]:
    """Learning rate and network shape (all algorithms), ``gamma`` and GAE ``lambda`` where asked.

    ``gamma`` is sampled as rl-zoo3 does (``1 - gamma`` log-uniform from 1e-4 to ``max_one_minus_gamma``, rl-zoo3's
    0.03); the critic-free searches widen it to 0.1, since their shipped Pendulum entries use ``gamma = 0.9`` (a short
    horizon is their only variance control), which rl-zoo3's range cannot reach.
    """
    params: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.01, log=True),
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    if discount:
        params["one_minus_gamma"] = trial.suggest_float("one_minus_gamma", 0.0001, max_one_minus_gamma, log=True)
    if gae:
        params["one_minus_gae_lambda"] = trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True)
    return params


def sample_reinforce_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of :class:`~sb3_pg_extras.REINFORCE` (docs/maths.md#2-reinforce-and-return-to-go)."""
    params = _suggest_common(trial, max_one_minus_gamma=CRITIC_FREE_MAX_ONE_MINUS_GAMMA)
    params["n_steps_pow"] = trial.suggest_int("n_steps_pow", 6, 11)
    params["normalize_advantage"] = trial.suggest_categorical("normalize_advantage", [True, False])
    params["ent_coef"] = trial.suggest_float("ent_coef", 1e-8, 0.05, log=True)
    params["max_grad_norm"] = trial.suggest_float("max_grad_norm", 0.3, 5.0, log=True)
    return _convert_pg_params(params)


def sample_reinforce_baseline_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """Optuna search space of :class:`~sb3_pg_extras.REINFORCEWithBaseline` (docs/maths.md#3-baselines-and-gae)."""
    params = _suggest_common(trial, max_one_minus_gamma=CRITIC_FREE_MAX_ONE_MINUS_GAMMA)
    params["n_steps_pow"] = trial.suggest_int("n_steps_pow", 6, 11)
    params["batch_size_pow"] = trial.suggest_int("batch_size_pow", 5, 10)
    params["vf_learning_rate"] = trial.suggest_float("vf_learning_rate", 1e-4, 0.01, log=True)
    params["n_critic_updates"] = trial.suggest_int("n_critic_updates", 1, 20)
    params["normalize_advantage"] = trial.suggest_categorical("normalize_advantage", [True, False])
    params["bootstrap_truncated"] = trial.suggest_categorical("bootstrap_truncated", [True, False])
    params["ent_coef"] = trial.suggest_float("ent_coef", 1e-8, 0.05, log=True)
    params["max_grad_norm"] = trial.suggest_float("max_grad_norm", 0.3, 5.0, log=True)
    return _convert_pg_params(params)


def sample_trpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of our :class:`~sb3_pg_extras.TRPO` (docs/maths.md §4): rl-zoo3's TRPO space
    (``target_kl`` is the trust-region radius ``delta``) plus the knobs it leaves fixed (``cg_damping``,
    ``line_search_shrinking_factor``)."""
    params = _suggest_common(trial, gae=True)
    params["n_steps_pow"] = trial.suggest_int("n_steps_pow", 7, 12)
    params["batch_size_pow"] = trial.suggest_int("batch_size_pow", 5, 10)
    params["n_critic_updates"] = trial.suggest_int("n_critic_updates", 5, 30)
    params["cg_max_steps"] = trial.suggest_int("cg_max_steps", 5, 30)
    params["cg_damping"] = trial.suggest_float("cg_damping", 1e-3, 0.2, log=True)
    params["line_search_shrinking_factor"] = trial.suggest_categorical("line_search_shrinking_factor", [0.6, 0.7, 0.8, 0.9])
    params["target_kl"] = trial.suggest_float("target_kl", 0.001, 0.1, log=True)
    return _convert_pg_params(params)


def _suggest_group(trial: optuna.Trial) -> dict[str, Any]:
    """The group-relative advantage options (docs/maths.md#6-grpo, #12-variants: REINFORCE++, OPO, GPG, ReMax); any
    group size works with any number of envs. ReMax's baseline is the greedy return, so it has no ``rloo``."""
    modes = ["outcome", "return_to_go", "process", "reinforce_pp", "reinforce_pp_baseline", "opo", "remax"]
    mode = trial.suggest_categorical("advantage_mode", modes)
    params = {
        "group_size": trial.suggest_categorical("group_size", [2, 4, 8, 16]),
        "advantage_mode": mode,
        "advantage_scale": trial.suggest_categorical("advantage_scale", ["group", "batch", "none", "gpg"]),
    }
    if mode != "remax":  # rloo keeps its default (False) with remax
        params["rloo"] = trial.suggest_categorical("rloo", [False, True])
    return params


def sample_grpo_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of :class:`~sb3_pg_extras.GRPO` (docs/maths.md#6-grpo; DAPO, Dr. GRPO, RLOO and the
    variants of docs/maths.md#12-variants: GSPO, CISPO, SAPO, two-sided / dual clip, KL estimators, reference mixing,
    dynamic sampling, truncation and entropy masks)."""
    params = _suggest_common(trial, discount=False)
    params.update(_suggest_group(trial))
    params["gamma"] = trial.suggest_categorical("gamma", [0.99, 0.999, 1.0])
    params["n_steps"] = trial.suggest_categorical("n_steps", [8, 16, 32, 64, 256])
    params["batch_size"] = trial.suggest_categorical("batch_size", [256, 1024, 4096, None])
    params["n_epochs"] = trial.suggest_categorical("n_epochs", [1, 2, 4, 8, 10])
    params["update_rule"] = trial.suggest_categorical("update_rule", ["ppo_clip", "cispo", "sapo"])
    params["importance_sampling_level"] = trial.suggest_categorical("importance_sampling_level", ["token", "sequence"])
    params["clip_range"] = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3])
    params["clip_range_high"] = trial.suggest_categorical("clip_range_high", [None, 0.28, 0.4])
    if params["update_rule"] == "ppo_clip":  # the extra bounds of the PPO clip
        params["delta"] = trial.suggest_categorical("delta", [None, 1.5, 2.0])
        params["clip_ratio_c"] = trial.suggest_categorical("clip_ratio_c", [None, 3.0])
    params["beta"] = trial.suggest_categorical("beta", [0.0, 0.001, 0.01, 0.04, 0.1])
    params["kl_estimator"] = trial.suggest_categorical("kl_estimator", ["k3", "k3+", "k2", "k1"])
    params["use_bias_correction_kl"] = trial.suggest_categorical("use_bias_correction_kl", [False, True])
    params["ref_update_interval"] = trial.suggest_categorical("ref_update_interval", [None, 10, 100])
    if params["ref_update_interval"] is not None:
        params["ref_model_mixup_alpha"] = trial.suggest_categorical("ref_model_mixup_alpha", [1.0, 0.6, 0.1])
    params["loss_aggregation"] = trial.suggest_categorical("loss_aggregation", ["grpo", "bnpo", "dr_grpo"])
    params["dynamic_sampling"] = trial.suggest_categorical("dynamic_sampling", [False, True])
    params["mask_truncated_completions"] = trial.suggest_categorical("mask_truncated_completions", [False, True])
    params["top_entropy_quantile"] = trial.suggest_categorical("top_entropy_quantile", [1.0, 0.5, 0.2])
    params["ent_coef"] = trial.suggest_float("ent_coef", 1e-8, 0.05, log=True)
    params["max_grad_norm"] = trial.suggest_float("max_grad_norm", 0.3, 5.0, log=True)
    params["target_kl"] = trial.suggest_categorical("target_kl", [None, 0.01, 0.03, 0.1])
    return _convert_pg_params(params)


def sample_trpo_group_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of the critic-free TRPO (``TRPO(advantage_estimator="group")``): TRPO's actor knobs plus
    the group options (no learning rate: it is the critic's, and there is no critic)."""
    params: dict[str, Any] = {
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
        **_suggest_group(trial),
        "gamma": trial.suggest_categorical("gamma", [0.99, 0.999, 1.0]),
        "n_steps_pow": trial.suggest_int("n_steps_pow", 5, 10),
        "cg_max_steps": trial.suggest_int("cg_max_steps", 5, 30),
        "cg_damping": trial.suggest_float("cg_damping", 1e-3, 0.2, log=True),
        "target_kl": trial.suggest_float("target_kl", 0.001, 0.1, log=True),
    }
    return _convert_pg_params(params)


#: zoo name -> Optuna sampler, merged into ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` by :func:`register_algorithms`.
HYPERPARAMS_SAMPLER: dict[str, Callable[..., dict[str, Any]]] = {
    "reinforce": sample_reinforce_params,
    "reinforce_baseline": sample_reinforce_baseline_params,
    "trpo": sample_trpo_params,
    "grpo": sample_grpo_params,
    "trpo_group": sample_trpo_group_params,
}
#: zoo name -> converter from stored trial parameters to constructor kwargs (rl-zoo3 ``--trial-id``).
HYPERPARAMS_CONVERTER: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    name: _convert_pg_params for name in HYPERPARAMS_SAMPLER
}


# --------------------------------------------------------------------------------------------------------------------
# Registration and configuration files
# --------------------------------------------------------------------------------------------------------------------
def register_algorithms() -> dict[str, type[BaseAlgorithm]]:
    """Make ``reinforce``, ``reinforce_baseline``, ``trpo`` (ours), ``grpo`` and ``trpo_contrib`` known to rl-zoo3.

    Updates rl-zoo3's registries in place (``rl_zoo3.utils.ALGOS``, ``HYPERPARAMS_SAMPLER``, ``HYPERPARAMS_CONVERTER``)
    and makes ``rl_zoo3.train`` use :class:`PGExtrasExperimentManager`. Idempotent.

    :return: the registered ``{zoo name: algorithm class}``; an algorithm that failed to import is left out and
        :func:`main` reports why when it is asked for.

    Example::

        >>> from sb3_pg_extras.zoo import register_algorithms
        >>> sorted(register_algorithms())
        ['grpo', 'reinforce', 'reinforce_baseline', 'trpo', 'trpo_contrib', 'trpo_group']
        >>> from rl_zoo3.utils import ALGOS
        >>> ALGOS["trpo"].__module__, ALGOS["trpo_contrib"].__module__
        ('sb3_pg_extras.trpo.algo', 'sb3_contrib.trpo.trpo')
    """
    from sb3_contrib import TRPO as ContribTRPO

    registered: dict[str, type[BaseAlgorithm]] = {CONTRIB_TRPO: ContribTRPO}
    zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[CONTRIB_TRPO] = zoo_hyperparams_opt.sample_trpo_params
    zoo_hyperparams_opt.HYPERPARAMS_CONVERTER[CONTRIB_TRPO] = zoo_hyperparams_opt.convert_onpolicy_params
    for name, (module, class_name) in PG_EXTRAS_ALGOS.items():
        try:
            registered[name] = getattr(importlib.import_module(module), class_name)
        except (ImportError, AttributeError) as error:
            _IMPORT_ERRORS[name] = f"{type(error).__name__}: {error}"
            # Never leave rl-zoo3's sb3-contrib TRPO under our name "trpo" when ours is missing.
            zoo_utils.ALGOS.pop(name, None)
            continue
        _IMPORT_ERRORS.pop(name, None)
        zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[name] = HYPERPARAMS_SAMPLER[name]
        zoo_hyperparams_opt.HYPERPARAMS_CONVERTER[name] = HYPERPARAMS_CONVERTER[name]
    zoo_utils.ALGOS.update(registered)
    zoo_train.ExperimentManager = PGExtrasExperimentManager  # type: ignore[misc]
    return registered


def _rl_zoo_hyperparams_dir() -> Path:
    # Same lookup as rl_zoo3.exp_manager.ExperimentManager (package folder, else the source checkout's root).
    package = Path(zoo_utils.__file__).parent
    return package / "hyperparams" if (package / "hyperparams").is_dir() else package.parent / "hyperparams"


_RESOURCE_STACK = contextlib.ExitStack()
atexit.register(_RESOURCE_STACK.close)


def config_path(algo: str) -> str | None:
    """The hyperparameter file used for ``algo`` when no ``-conf`` is given (``None``: rl-zoo3's own default).

    Ours live in the package ``sb3_pg_extras.zoo_configs`` (the repository's ``zoo_configs/`` folder, packaged in the
    wheel); ``trpo_contrib`` uses rl-zoo3's tuned ``hyperparams/trpo.yml``.

    Example::

        >>> Path(config_path("grpo")).name, Path(config_path("trpo_contrib")).parent.name, config_path("ppo")
        ('grpo.yml', 'hyperparams', None)
    """
    if algo == CONTRIB_TRPO:
        return str(_rl_zoo_hyperparams_dir() / "trpo.yml")
    if algo not in PG_EXTRAS_ALGOS:
        return None
    resource = importlib.resources.files("sb3_pg_extras.zoo_configs") / ALGORITHMS[algo].config
    if not resource.is_file():
        raise FileNotFoundError(
            f"No hyperparameter file {ALGORITHMS[algo].config} in the package sb3_pg_extras.zoo_configs ({resource}); "
            "reinstall pg-extras or pass one with -conf."
        )
    # A real file for a normal install; extracted to a temporary file (kept until exit) for a zipped install.
    return str(_RESOURCE_STACK.enter_context(importlib.resources.as_file(resource)))


def _load_yaml(path: str) -> dict[str, Any]:
    """A zoo hyperparameter file: a mapping of env ids (and ``default``) to entries; anything else is a config error."""
    try:
        with open(path) as file:
            table = yaml.safe_load(file) or {}
    except yaml.YAMLError as error:
        raise ZooConfigError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(table, dict):
        raise ZooConfigError(
            f"{path}: the top level must be a mapping of env ids to hyperparameters (e.g. 'CartPole-v1:' then the "
            f"indented entries), got a {type(table).__name__}."
        )
    return table


# rl-zoo3 reads a string in these keys as a schedule 'lin_<value>'
_SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_high", "clip_range_vf")


def _check_schedule_strings(hyperparams: dict[str, Any], source: str) -> None:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string, which rl-zoo3 then fails to parse as a schedule: name it."""
    for key in _SCHEDULE_KEYS:
        value = hyperparams.get(key)
        if isinstance(value, str) and not value.startswith("lin_"):
            raise ZooConfigError(
                f"{source}: {key}: {value!r} is a string (YAML 1.1 reads a number such as 1e-3 without a dot as a "
                f"string): write {key}: !!float {value} (or 1.0e-3), or {key}: lin_{value} for a linear schedule."
            )


def _accepted_arguments(algo_class: type) -> set[str] | None:
    """Constructor arguments of ``algo_class`` (``None`` if it takes ``**kwargs``)."""
    parameters = inspect.signature(algo_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    # rl-zoo3 passes env, seed, verbose, device and tensorboard_log itself; private arguments are not hyperparameters.
    return {name for name in parameters if name not in _ZOO_PASSED and not name.startswith("_")}


def check_hyperparameters(algo: str, hyperparams: dict[str, Any], source: str = "the hyperparameters") -> None:
    """Raise a :class:`ZooConfigError` (a ``ValueError``) naming each key of a zoo entry that ``algo`` does not accept.

    :param algo: zoo name (``grpo``, ...), must be registered
    :param hyperparams: one YAML entry (after ``-params`` overrides), zoo-only keys (``n_envs``, ``normalize``, ...)
        allowed
    :param source: where the entry comes from, for the message

    Example::

        >>> _ = register_algorithms()
        >>> check_hyperparameters("grpo", {"policy": "MlpPolicy", "n_envs": 8, "group_size": 8})
        >>> check_hyperparameters("grpo", {"policy": "MlpPolicy", "n_timesteps": 1000, "group_sise": 8})
        Traceback (most recent call last):
        ...
        sb3_pg_extras.zoo.ZooConfigError: GRPO (--algo grpo) does not accept the hyperparameter 'group_sise' (did ...
    """
    algo_class = zoo_utils.ALGOS[algo]
    accepted = _accepted_arguments(algo_class)
    if accepted is None:
        return
    unknown = sorted(set(hyperparams) - accepted - ZOO_ONLY_KEYS)
    if unknown:
        named = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(accepted | ZOO_ONLY_KEYS), n=1)
            named.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ZooConfigError(
            f"{algo_class.__name__} (--algo {algo}) does not accept the hyperparameter {', '.join(named)} from {source}: "
            f"remove or rename it. {algo_class.__name__} accepts: {', '.join(sorted(accepted))}; rl-zoo3 itself reads: "
            f"{', '.join(sorted(ZOO_ONLY_KEYS))}."
        )
    if "policy" not in hyperparams:
        raise ZooConfigError(f"{source} has no 'policy' for {algo_class.__name__}: add e.g. policy: 'MlpPolicy'.")


@dataclasses.dataclass(frozen=True)
class TrialOptions:
    """``optimize``'s options on top of rl-zoo3's (``--trial-seeds``, ``--tune-keys``, ``--trials-csv``).

    Each trial trains once per seed of ``seeds`` and scores the mean of the last evaluations, so that one lucky seed
    cannot win the search; ``tune_keys`` keeps the sampled values of those keys only (a search around the entry);
    ``trials_csv`` gets one row per finished trial with the best value so far (the curve that shows a plateau).
    """

    seeds: tuple[int, ...]
    tune_keys: frozenset[str] | None = None
    trials_csv: Path | None = None

    def write_row(self, trial: optuna.Trial, value: float, finals: list[float]) -> None:
        assert self.trials_csv is not None
        done = [t.value for t in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
        best = max([value, *[v for v in done if v is not None]])
        row = {
            "trial": trial.number,
            "value": round(value, 2),
            "best_so_far": round(best, 2),
            "finals": " ".join(f"{x:.1f}" for x in finals),
            "hyperparams": trial.user_attrs.get("hyperparams", ""),
        }
        new = not self.trials_csv.exists()
        self.trials_csv.parent.mkdir(parents=True, exist_ok=True)
        with self.trials_csv.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)


class PGExtrasExperimentManager(ExperimentManager):
    """rl-zoo3's ``ExperimentManager`` that reads our ``zoo_configs/<algo>.yml`` when no ``-conf`` is given and
    rejects YAML/``-params`` keys the algorithm does not accept (with the key named) before building anything.

    Takes exactly ``ExperimentManager``'s arguments.
    """

    def __init__(self, args: argparse.Namespace, algo: str, *rest: Any, config: str | None = None, **kwargs: Any) -> None:
        super().__init__(args, algo, *rest, config=config or config_path(algo), **kwargs)

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """rl-zoo3's lookup (env entry, else ``default``), then :func:`check_hyperparameters`."""
        if str(self.config).endswith((".yml", ".yaml")) and os.path.isfile(self.config):
            _load_yaml(self.config)  # the top level is a mapping (rl-zoo3 would fail with an AttributeError)
        try:
            hyperparams, saved_hyperparams = super().read_hyperparameters()
        except yaml.YAMLError as error:
            raise ZooConfigError(f"{self.config} is not valid YAML: {error}") from error
        except ValueError as error:
            if "Hyperparameters not found" not in str(error):
                raise
            known = sorted(_load_yaml(self.config)) if str(self.config).endswith((".yml", ".yaml")) else []
            raise ZooConfigError(
                f"No hyperparameters for --env {self.env_name.gym_id} (and no 'default' entry) in {self.config}. "
                f"Entries there: {', '.join(known) or 'none'}. Add an entry or pass your own file with -conf."
            ) from error
        source = f"{self.config} (entry for {self.env_name.gym_id}, with -params)"
        _check_schedule_strings(hyperparams, source)
        if self.algo in zoo_utils.ALGOS:
            check_hyperparameters(self.algo, hyperparams, source)
        return hyperparams, saved_hyperparams

    #: ``optimize``'s own options (:class:`TrialOptions`), set by :func:`optimize` for the run; None: rl-zoo3's trials.
    trial_options: TrialOptions | None = None

    def objective(self, trial: optuna.Trial) -> float:
        """rl-zoo3's objective, once per seed of ``--trial-seeds`` (mean of the last evaluations), on the sampled
        values of ``--tune-keys`` only (the entry's values for the rest); one row per trial in ``--trials-csv``."""
        options = self.trial_options
        if options is None:
            return super().objective(trial)
        sampler = zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[self.algo]

        def restricted(*args: Any) -> dict[str, Any]:
            sampled = sampler(*args)
            kept = sampled if options.tune_keys is None else {k: v for k, v in sampled.items() if k in options.tune_keys}
            trial.set_user_attr("hyperparams", json.dumps(kept, sort_keys=True, default=str))
            return kept

        finals: list[float] = []
        zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[self.algo] = restricted
        try:
            for seed in options.seeds:
                self.seed = seed  # the envs (create_envs) and, through the global RNGs, the model's initialisation
                set_random_seed(seed)
                finals.append(float(super().objective(trial)))
        finally:
            zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[self.algo] = sampler
        value = float(np.mean(finals))
        trial.set_user_attr("finals", finals)
        if options.trials_csv is not None:
            options.write_row(trial, value, finals)
        return value

    def setup_experiment(self) -> Any:
        """rl-zoo3's ``setup_experiment``; a bad hyperparameter value (our constructors' ValueError) is a config error."""
        try:
            return super().setup_experiment()
        except ZooError:
            raise
        except ValueError as error:
            if self.algo not in PG_EXTRAS_ALGOS:
                raise
            if self.trained_agent and ("saved by" in str(error) or "could not be loaded" in str(error)):
                raise ZooUsageError(f"-i {self.trained_agent}: {error}") from error
            raise ZooConfigError(
                f"{self.config} (entry for {self.env_name.gym_id}, with -params) does not build {self.algo}: {error}"
            ) from error


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------
def _peek(argv: Sequence[str], *flags: str, default: Any = None, nargs: str | None = None) -> Any:
    """Value of one rl-zoo3 flag in ``argv`` without parsing the rest (rl-zoo3 stays the parser of record)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(*flags, dest="value", default=default, nargs=nargs)
    known, _ = parser.parse_known_args(list(argv))
    return known.value


def _check_algo(algo: str) -> None:
    if algo in _IMPORT_ERRORS:
        module, class_name = PG_EXTRAS_ALGOS[algo]
        raise ZooUsageError(f"--algo {algo}: {module}.{class_name} cannot be imported ({_IMPORT_ERRORS[algo]}).")
    if algo not in zoo_utils.ALGOS:
        ours = [name for name in (*PG_EXTRAS_ALGOS, CONTRIB_TRPO) if name in zoo_utils.ALGOS]
        others = sorted(set(zoo_utils.ALGOS) - set(ours))
        close = difflib.get_close_matches(algo, list(zoo_utils.ALGOS), n=1)
        raise ZooUsageError(
            f"Unknown algorithm --algo {algo!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f". pg-extras algorithms: {', '.join(ours)} ({CONTRIB_TRPO} is sb3-contrib's TRPO); "
            f"rl-zoo3 algorithms: {', '.join(others)}."
        )


def _check_env(env_id: str, algo: str, gym_packages: Sequence[str], config: str | None) -> None:
    for module in gym_packages:
        importlib.import_module(module)
    import rl_zoo3.import_envs  # noqa: F401  (registers rl-zoo3's extra envs, as rl-zoo3's train/enjoy do)

    if env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3)
    configured: list[str] = []
    if config is not None and config.endswith((".yml", ".yaml")) and os.path.isfile(config):
        configured = [name for name in _load_yaml(config) if name != "default"]
    raise ZooUsageError(
        f"Unknown environment --env {env_id!r}"
        + (f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else "")
        + (f". Environments with tuned {algo} hyperparameters: {', '.join(configured)}" if configured else "")
        + ". Any id of the gymnasium registry works (python -c 'import gymnasium; gymnasium.pprint_registry()'); "
        "register your own with --gym-packages."
    )


@contextlib.contextmanager
def _argv(program: str, arguments: Sequence[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = [program, *arguments]
    try:
        yield
    finally:
        sys.argv = saved


def _prepare(command: str, argv: list[str]) -> tuple[str, str]:
    """Register, then check ``--algo``/``--env`` before rl-zoo3 parses ``argv``. Returns ``(algo, env_id)``."""
    register_algorithms()
    if any(flag in argv for flag in ("-h", "--help")):
        return "", ""
    algo = _peek(argv, "--algo", default="ppo")
    env_id = str(_peek(argv, "--env", default="CartPole-v1"))
    _check_algo(algo)
    config = _peek(argv, "-conf", "--conf-file") if command != "enjoy" else None
    _check_env(env_id, algo, _peek(argv, "--gym-packages", default=[], nargs="+"), config or config_path(algo))
    return algo, env_id


def train(argv: Sequence[str]) -> None:
    """``rl_zoo3.train`` with our algorithms registered and our YAML files as the default ``-conf``."""
    arguments = list(argv)
    _prepare("train", arguments)
    with _argv("pg-extras-zoo train", arguments):
        zoo_train.train()


def optimize(argv: Sequence[str]) -> None:
    """``train -optimize``: Optuna search over the algorithm's sampler (see :data:`HYPERPARAMS_SAMPLER`)."""
    arguments = list(argv)
    if not {"-optimize", "--optimize-hyperparameters"} & set(arguments):
        arguments.append("--optimize-hyperparameters")
    _prepare("optimize", arguments)
    seed = _peek(arguments, "--seed", default="-1")
    if str(seed).lstrip("-").isdigit() and int(seed) in REPORT_SEEDS:
        raise ZooUsageError(
            f"--seed {seed}: seeds {REPORT_SEEDS[0]}-{REPORT_SEEDS[-1]} are pg-extras' held-out report seeds (the "
            "benchmark is reported on them, so no hyperparameter may be chosen on them): optimize on 0-4 or any other seed."
        )
    options = _pop_trial_options(arguments)
    n_trials = _peek(arguments, "--n-trials", default="500")
    if not str(n_trials).isdigit() or int(n_trials) < 1:
        raise ZooUsageError(f"--n-trials {n_trials}: give the number of Optuna trials, an integer >= 1.")
    storage = _peek(arguments, "--storage")
    if storage is not None:
        _create_shared_study(storage, _peek(arguments, "--study-name"))
    PGExtrasExperimentManager.trial_options = options
    try:
        with _argv("pg-extras-zoo optimize", arguments):
            zoo_train.train()
    finally:
        PGExtrasExperimentManager.trial_options = None


def _pop_trial_options(arguments: list[str]) -> TrialOptions | None:
    """Take ``--trial-seeds``, ``--tune-keys`` and ``--trials-csv`` out of ``arguments`` (rl-zoo3 does not know them)."""
    parser = argparse.ArgumentParser(prog="pg-extras-zoo optimize", add_help=False, allow_abbrev=False)
    parser.add_argument("--trial-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--tune-keys", nargs="+", default=None)
    parser.add_argument("--trials-csv", type=Path, default=None)
    known, rest = parser.parse_known_args(arguments)
    arguments[:] = rest
    if known.trial_seeds is None:
        if known.tune_keys is not None or known.trials_csv is not None:
            raise ZooUsageError("--tune-keys and --trials-csv go with --trial-seeds (e.g. --trial-seeds 0 1 2).")
        return None
    held = held_out_seeds(known.trial_seeds)
    if held:
        raise ZooUsageError(
            f"--trial-seeds {' '.join(map(str, held))}: seeds {REPORT_SEEDS[0]} and above are pg-extras' held-out report "
            f"seeds: tune on {TUNING_SEEDS[0]}-{TUNING_SEEDS[-1]}."
        )
    if len(set(known.trial_seeds)) != len(known.trial_seeds):
        raise ZooUsageError(f"--trial-seeds {' '.join(map(str, known.trial_seeds))}: each seed once.")
    algo = _peek(arguments, "--algo", default="ppo")
    if known.tune_keys is not None and algo in PG_EXTRAS_ALGOS:
        check_hyperparameters(algo, {"policy": "MlpPolicy", **dict.fromkeys(known.tune_keys)}, "--tune-keys")
    tune_keys = None if known.tune_keys is None else frozenset(known.tune_keys)
    _check_trials_csv(known.trials_csv, _peek(arguments, "--storage"), _peek(arguments, "--study-name"))
    return TrialOptions(tuple(known.trial_seeds), tune_keys, known.trials_csv)


def _check_trials_csv(path: Path | None, storage: str | None, study_name: str | None) -> None:
    """``--trials-csv`` is appended to only to resume the study it belongs to (``--storage`` and ``--study-name`` of a
    study that has trials); an existing file and a new study would mix two searches in one table."""
    if path is None or not path.exists():
        return
    trials = 0
    if storage is not None and study_name is not None:
        try:
            trials = len(optuna.load_study(study_name=study_name, storage=storage).trials)
        except KeyError:  # no such study yet: a new search
            trials = 0
    if trials == 0:
        raise ZooUsageError(
            f"--trials-csv {path} exists and this is a new search: its rows would be mixed with another search's. "
            "Move the file away or name another one; to resume the search it belongs to, pass that study's "
            "--storage and --study-name."
        )


def _create_shared_study(storage: str, study_name: str | None, attempts: int = 10) -> None:
    """Create the study in ``storage`` before rl-zoo3 does, retrying while another worker creates the same schema.

    Several ``optimize`` workers started at once on one new storage race to create its tables (Optuna then fails with
    "UNIQUE constraint failed: alembic_version"); whoever loses retries and loads the study the winner made.
    """
    if study_name is None:
        raise ZooUsageError("--storage needs --study-name, so that several workers fill the same study.")
    import sqlalchemy.exc

    if "://" not in storage:
        raise ZooUsageError(
            f"--storage {storage!r} is not a database URL: use e.g. --storage sqlite:///optuna.db (or a journal file "
            "through optuna's JournalStorage)."
        )
    for attempt in range(attempts):
        try:
            optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, direction="maximize")
            return
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, optuna.exceptions.DuplicatedStudyError):
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)
        except (sqlalchemy.exc.ArgumentError, ValueError, ImportError) as error:
            raise ZooUsageError(f"--storage {storage!r} cannot be opened: {error}") from error
    try:
        optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True, direction="maximize")
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        raise ZooUsageError(
            f"--storage {storage!r} cannot be opened or written ({type(error).__name__}: {str(error).splitlines()[0]}): "
            "check the path exists and is writable."
        ) from error


def enjoy(argv: Sequence[str]) -> None:
    """``rl_zoo3.enjoy`` with our algorithms registered.

    rl-zoo3's default ``-f rl-trained-agents`` downloads pretrained agents from the Hugging Face hub, where there are
    none of ours: for our algorithms without ``-f``/``--folder`` the folder is ``logs`` (``train``'s default) unless
    ``rl-trained-agents/<algo>`` exists.
    """
    arguments = list(argv)
    algo, _ = _prepare("enjoy", arguments)
    folder = _peek(arguments, "-f", "--folder")
    if folder is None and algo in (*PG_EXTRAS_ALGOS, CONTRIB_TRPO) and not os.path.isdir(f"rl-trained-agents/{algo}"):
        folder = "logs"
        arguments += ["-f", folder]
    if folder is not None and algo and not os.path.isdir(os.path.join(folder, algo)):
        raise ZooUsageError(
            f"No trained {algo} model in {folder!r} (no {os.path.join(folder, algo)!r} folder): train one first "
            f"(pg-extras-zoo train --algo {algo} --env <env> -f {folder}) or pass the folder you trained into with -f."
        )
    try:
        from rl_zoo3.enjoy import enjoy as zoo_enjoy
    except ImportError as error:  # rl-zoo3 2.9 imports `requests` for its hub download without declaring it
        raise ImportError(
            f"rl_zoo3.enjoy cannot be imported ({error}); pip install 'pg-extras[zoo]' (or requests)."
        ) from error
    with _argv("pg-extras-zoo enjoy", arguments):
        zoo_enjoy()


# --------------------------------------------------------------------------------------------------------------------
# Demo: GRPO on CartPole-v1 through the zoo, then evaluation and a learning-curve PNG
# --------------------------------------------------------------------------------------------------------------------
def plot_learning_curve(run_dir: str, output: str, title: str = "") -> str:
    """Write a learning-curve PNG from the ``*monitor.csv`` (training episodes) and ``evaluations.npz``
    (``EvalCallback``) files in ``run_dir``.

    :return: ``output``

    Example::

        >>> plot_learning_curve("logs/grpo/CartPole-v1_1", "logs/grpo/CartPole-v1_1/learning_curve.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib import pyplot as plt
    from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results
    from stable_baselines3.common.results_plotter import X_TIMESTEPS, ts2xy, window_func

    figure, axis = plt.subplots(figsize=(7, 4))
    try:
        x, y = ts2xy(load_results(run_dir), X_TIMESTEPS)
    except LoadMonitorResultsError:
        x, y = np.zeros(0), np.zeros(0)
    if len(x) > 0:
        axis.plot(x, y, ".", alpha=0.15, color="tab:blue", label="training episodes")
        window = min(50, len(x))
        if window > 1:
            wx, wy = window_func(x, y, window, np.mean)
            axis.plot(wx, wy, color="tab:blue", label=f"training (mean of {window})")
    evaluations = Path(run_dir) / "evaluations.npz"
    if evaluations.is_file():
        data = np.load(evaluations)
        mean, std = data["results"].mean(axis=1), data["results"].std(axis=1)
        axis.plot(data["timesteps"], mean, "o-", color="tab:orange", label="evaluation (deterministic)")
        axis.fill_between(data["timesteps"], mean - std, mean + std, color="tab:orange", alpha=0.2)
    axis.set_xlabel("environment steps")
    axis.set_ylabel("episode return")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output


def demo(argv: Sequence[str]) -> None:
    """Train GRPO on CartPole-v1 with ``zoo_configs/grpo.yml`` and a progress bar, evaluate, plot, print the paths."""
    parser = argparse.ArgumentParser(
        prog="pg-extras-zoo demo", description="Train GRPO on CartPole-v1 through RL Zoo, evaluate it, plot it."
    )
    parser.add_argument("--algo", default="grpo", help="algorithm (default: grpo)")
    parser.add_argument("--env", default="CartPole-v1", help="environment id (default: CartPole-v1)")
    parser.add_argument("-f", "--log-folder", default="logs/demo", help="log folder (default: logs/demo)")
    parser.add_argument("-n", "--n-timesteps", type=int, default=-1, help="training steps (default: the YAML's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-freq", type=int, default=10_000, help="evaluate every n steps (default: 10000)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--final-eval-episodes", type=int, default=20)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(list(argv))

    import numpy as np
    from huggingface_sb3 import EnvironmentName
    from stable_baselines3.common.evaluation import evaluate_policy

    train_args = [
        *("--algo", args.algo, "--env", args.env, "-f", args.log_folder, "--seed", str(args.seed)),
        *("--eval-freq", str(args.eval_freq), "--eval-episodes", str(args.eval_episodes), "-n", str(args.n_timesteps)),
        *("--num-threads", "1", "--log-interval", "-2"),
        *(() if args.no_progress else ("--progress",)),
    ]
    print("pg-extras-zoo train " + " ".join(train_args))
    train(train_args)

    env_name = EnvironmentName(args.env)
    algo_folder = os.path.join(args.log_folder, args.algo)
    run_dir = os.path.join(algo_folder, f"{env_name}_{zoo_utils.get_latest_run_id(algo_folder, env_name)}")
    model_path = os.path.join(run_dir, f"{env_name}.zip")
    model = zoo_utils.ALGOS[args.algo].load(model_path, device="cpu")
    # Evaluate as rl-zoo3's enjoy does: the saved env settings (wrappers, VecNormalize statistics) of the run
    hyperparams, stats_path = zoo_utils.get_saved_hyperparams(os.path.join(run_dir, env_name), test_mode=True)
    eval_env = zoo_utils.create_test_env(
        args.env,
        n_envs=1,
        stats_path=stats_path,
        seed=args.seed + 1_000,
        should_render=False,
        hyperparams=hyperparams,
        env_kwargs=hyperparams.pop("env_kwargs", None),
    )
    returns, _ = evaluate_policy(
        model, eval_env, n_eval_episodes=args.final_eval_episodes, deterministic=True, return_episode_rewards=True
    )
    eval_env.close()
    png = plot_learning_curve(run_dir, os.path.join(run_dir, "learning_curve.png"), f"{args.algo} on {args.env} (RL Zoo)")
    mean, std = float(np.mean(returns)), float(np.std(returns))
    print()
    print(f"Evaluation of {args.algo} on {args.env}: mean return {mean:.1f} +/- {std:.1f} over {len(returns)} episodes")
    print(f"  model:          {model_path}")
    if os.path.isfile(os.path.join(run_dir, "best_model.zip")):
        print(f"  best model:     {os.path.join(run_dir, 'best_model.zip')}")
    print(f"  logs:           {run_dir} (monitor CSV, evaluations.npz, {env_name}/config.yml)")
    print(f"  learning curve: {png}")
    print(f"  replay it:      python -m sb3_pg_extras.zoo enjoy --algo {args.algo} --env {args.env} -f {args.log_folder}")


_USAGE = f"""usage: pg-extras-zoo {{{",".join(_COMMANDS)}}} [rl-zoo3 arguments]

  train     rl-zoo3 train (python -m rl_zoo3.train flags), hyperparameters from zoo_configs/<algo>.yml without -conf
  enjoy     rl-zoo3 enjoy on a trained model (add --no-render when headless)
  optimize  rl-zoo3 train -optimize with Optuna samplers for our algorithms
  demo      train GRPO on CartPole-v1, evaluate it and plot a learning curve (`make demo`)

pg-extras algorithms: {", ".join(PG_EXTRAS_ALGOS)}, {CONTRIB_TRPO} (sb3-contrib's TRPO); rl-zoo3's own ones work too.
`pg-extras-zoo <command> -h` lists the flags of a command."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m sb3_pg_extras.zoo`` and of the ``pg-extras-zoo`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(_USAGE)
        return
    command, rest = arguments[0], arguments[1:]
    commands: dict[str, Callable[[Sequence[str]], None]] = {"train": train, "enjoy": enjoy, "optimize": optimize, "demo": demo}
    try:
        if command not in commands:
            close = difflib.get_close_matches(command, list(commands), n=1)
            raise ZooUsageError(
                f"Unknown command {command!r}" + (f" (did you mean {close[0]!r}?)" if close else "") + f"; use one of: "
                f"{', '.join(commands)}."
            )
        commands[command](rest)
    except ZooError as error:
        if argv is not None:
            raise
        sys.exit(f"pg-extras-zoo: error: {error}")


if __name__ == "__main__":
    main()
