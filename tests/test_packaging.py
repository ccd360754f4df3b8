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


def test_zoo_configs_are_importable_resources():
    from importlib import resources

    names = {p.name for p in resources.files("sb3_pg_extras.zoo_configs").iterdir()}
    assert {"grpo.yml", "trpo.yml", "reinforce.yml", "reinforce_baseline.yml"} <= names
