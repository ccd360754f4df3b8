"""TorchRL hyperparameter files of pg-extras (installed as ``torchrl_pg_extras.configs``), next to ``zoo_configs/``.

One ``<algo>.yaml`` per TorchRL pipeline (``grpo``, ``trpo``, ``reinforce``): a ``default`` entry and one entry per env
that changes it. The example scripts (``examples/torchrl/``) and the benchmark (``benchmarks/torchrl_runner.py``) read
them; a script takes ``key=value`` overrides on its command line, in the style of TorchRL's sota-implementations.

Example::

    >>> from torchrl_pg_extras.configs import load_config
    >>> load_config("grpo", "Pendulum-v1")["group_size"]
    4
    >>> sorted(envs("trpo"))
    ['Acrobot-v1', 'CartPole-v1', 'LunarLander-v3', 'MountainCar-v0', 'MountainCarContinuous-v0', 'Pendulum-v1']
"""

from __future__ import annotations

import difflib
from importlib.resources import files
from typing import Any

import yaml

__all__ = ["ALGOS", "envs", "load_config", "parse_overrides"]

ALGOS = ("grpo", "trpo", "reinforce")


def _file(algo: str) -> dict[str, dict[str, Any]]:
    if algo not in ALGOS:
        raise ValueError(f"unknown TorchRL config {algo!r}: use one of {', '.join(ALGOS)}.")
    data = yaml.safe_load(files(__name__).joinpath(f"{algo}.yaml").read_text())
    if not isinstance(data, dict) or not isinstance(data.get("default"), dict):
        raise ValueError(f"torchrl_configs/{algo}.yaml: expected a 'default' entry and one entry per env.")
    return data


def envs(algo: str) -> list[str]:
    """The envs ``<algo>.yaml`` has an entry for."""
    return [k for k in _file(algo) if k != "default"]


def load_config(algo: str, env_id: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hyperparameters of ``algo`` on ``env_id``: ``default``, then the env's entry, then ``overrides``.

    An env without an entry is refused with the list of those that have one; an unknown key (in the env's entry or in
    ``overrides``) is refused with the valid keys.
    """
    data = _file(algo)
    if env_id not in data or env_id == "default":
        close = difflib.get_close_matches(env_id, envs(algo), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"torchrl_configs/{algo}.yaml has no entry for {env_id!r}{hint}; it has: {', '.join(envs(algo))}. "
            "Add one (the keys of 'default'), or pick one of those."
        )
    config = dict(data["default"])
    for where, values in ((f"its {env_id} entry", data[env_id] or {}), ("the overrides", overrides or {})):
        unknown = [k for k in values if k not in config]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(config), n=1)
            raise ValueError(
                f"torchrl_configs/{algo}.yaml, {where}: unknown key {unknown[0]!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; the keys are: {', '.join(config)}."
            )
        config.update(values)
    return config


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``["lr=3e-4", "dynamic_sampling=true"]`` -> ``{"lr": 0.0003, "dynamic_sampling": True}`` (values read as YAML)."""
    out = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ValueError(f"override {token!r}: expected key=value, e.g. lr=3e-4")
        parsed = yaml.safe_load(value) if value else None
        if isinstance(parsed, str) and _is_number(parsed):  # YAML 1.1 reads 3e-4 as a string
            parsed = float(parsed)
        out[key] = parsed
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
