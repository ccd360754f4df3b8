"""Packaging: every import package of the checkout ships in the wheel, with the zoo configs as package data."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("pg_extras", "sb3_pg_extras", "torchrl_pg_extras")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found - listed == set(), f"add these packages to [tool.setuptools] packages in pyproject.toml: {found - listed}"
    assert config["package-dir"]["sb3_pg_extras.zoo_configs"] == "zoo_configs"
    assert config["package-dir"]["torchrl_pg_extras.configs"] == "torchrl_configs"


def test_zoo_configs_are_importable_resources():
    from importlib import resources

    names = {p.name for p in resources.files("sb3_pg_extras.zoo_configs").iterdir()}
    assert {"grpo.yml", "trpo.yml", "reinforce.yml", "reinforce_baseline.yml"} <= names


def test_torchrl_configs_are_importable_resources_with_an_entry_per_env():
    from importlib import resources

    from torchrl_pg_extras.configs import ALGOS, envs, load_config

    names = {p.name for p in resources.files("torchrl_pg_extras.configs").iterdir()}
    assert {f"{algo}.yaml" for algo in ALGOS} <= names
    for algo in ALGOS:
        assert {"CartPole-v1", "Pendulum-v1"} <= set(envs(algo))
        for env_id in envs(algo):
            assert set(load_config(algo, env_id)) == set(load_config(algo, "CartPole-v1"))  # every key has a default
