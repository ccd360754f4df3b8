"""RL Zoo integration (``python -m sb3_pg_extras.zoo``): registration, packaged YAML files, train/enjoy/optimize/demo.

The end-to-end tests run the real module entry point in a subprocess (a few thousand steps each); the rest run
in-process through :func:`sb3_pg_extras.zoo.main` to keep the suite fast.
"""

from __future__ import annotations

import argparse
import importlib.resources
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch as th
import yaml
from rl_zoo3 import hyperparams_opt as zoo_hyperparams_opt
from rl_zoo3 import utils as zoo_utils
from sb3_contrib import TRPO as ContribTRPO

import sb3_pg_extras
from sb3_pg_extras import zoo

ROOT = Path(__file__).resolve().parents[2]
OURS = {
    "reinforce": sb3_pg_extras.REINFORCE,
    "reinforce_baseline": sb3_pg_extras.REINFORCEWithBaseline,
    "trpo": sb3_pg_extras.TRPO,
    "grpo": sb3_pg_extras.GRPO,
    "trpo_group": sb3_pg_extras.TRPO,
}
REQUIRED_ENVS = ["CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0", "LunarLander-v3"]
# Short-run overrides: small rollouts so that a few thousand steps make several updates.
SHORT = {
    "reinforce": ["n_envs:2", "n_steps:128"],
    "reinforce_baseline": ["n_envs:2", "n_steps:128", "batch_size:64"],
    "trpo": ["n_envs:2", "n_steps:128", "batch_size:64", "n_critic_updates:2"],
    "trpo_contrib": ["n_envs:2", "n_steps:128", "batch_size:64", "n_critic_updates:2"],
    "grpo": ["n_envs:4", "group_size:2", "n_steps:16", "batch_size:None"],
    "trpo_group": ["n_envs:4", "group_size:2", "n_steps:32"],
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    zoo.register_algorithms()
    yield
    th.set_num_threads(threads)


def _entries(algo: str) -> dict:
    with open(zoo.config_path(algo)) as file:
        return yaml.safe_load(file)


def _run_module(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "sb3_pg_extras.zoo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = f"STDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"
    assert result.returncode == 0, f"exit {result.returncode}\n{output}"
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Registration and configuration files
# ---------------------------------------------------------------------------------------------------------------------
def test_registration_replaces_zoo_trpo_and_keeps_contrib_reachable():
    registered = zoo.register_algorithms()
    for name, cls in OURS.items():
        assert zoo_utils.ALGOS[name] is cls is registered[name]
        assert zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[name] is zoo.HYPERPARAMS_SAMPLER[name]
        assert name in zoo_hyperparams_opt.HYPERPARAMS_CONVERTER
    assert zoo_utils.ALGOS["trpo"] is not ContribTRPO
    assert zoo_utils.ALGOS[zoo.CONTRIB_TRPO] is ContribTRPO
    assert zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[zoo.CONTRIB_TRPO] is zoo_hyperparams_opt.sample_trpo_params
    # rl-zoo3's own algorithms are untouched
    assert zoo_utils.ALGOS["ppo"].__name__ == "PPO"


@pytest.mark.parametrize("algo", sorted(OURS))
def test_config_is_a_packaged_resource_covering_the_required_envs(algo):
    path = Path(zoo.config_path(algo))
    resource = importlib.resources.files("sb3_pg_extras.zoo_configs") / f"{algo}.yml"
    assert path.samefile(str(resource)) and path.samefile(ROOT / "zoo_configs" / f"{algo}.yml")
    entries = _entries(algo)
    assert set(REQUIRED_ENVS) <= set(entries), f"missing entries: {set(REQUIRED_ENVS) - set(entries)}"
    assert "default" in entries


def test_contrib_trpo_uses_rl_zoo_tuned_file():
    path = Path(zoo.config_path(zoo.CONTRIB_TRPO))
    assert path.name == "trpo.yml" and path.parent.parent == Path(zoo_utils.__file__).parent
    assert zoo.config_path("ppo") is None  # rl-zoo3's own default


def _yaml_cases() -> list[tuple[str, str]]:
    cases = []
    for algo in sorted(OURS):
        with open(ROOT / "zoo_configs" / f"{algo}.yml") as file:
            for env_id in yaml.safe_load(file):
                # The `default` entry is what an env without an entry gets: build it on CartPole-v0 (no entry).
                cases.append((algo, "CartPole-v0" if env_id == "default" else env_id))
    return cases


def _skip_unless_makeable(env_id: str) -> None:
    """Skip an entry whose env this install cannot build (PyBullet's are not registered; MuJoCo needs the extra)."""
    import gymnasium as gym

    if env_id not in gym.registry:
        pytest.skip(f"{env_id} is not registered here (PyBullet envs need pybullet's own registration)")
    entry_point = str(gym.spec(env_id).entry_point)
    if "mujoco" in entry_point and importlib.util.find_spec("mujoco") is None:
        pytest.skip(f"{env_id} needs the MuJoCo extra: pip install -e '.[mujoco]'")


def test_trpo_file_has_every_rl_zoo3_entry_so_trpo_is_a_drop_in_for_trpo_contrib():
    """``--algo trpo`` on every env rl-zoo3 tunes for TRPO, with its settings; MuJoCo -v5 entries equal rl-zoo3's -v4."""
    with open(zoo.config_path(zoo.CONTRIB_TRPO)) as file:
        theirs = yaml.safe_load(file)
    ours = _entries("trpo")
    for env_id, entry in theirs.items():
        assert ours.get(env_id) == entry, env_id
        if env_id.endswith("-v4"):
            assert ours.get(env_id.replace("-v4", "-v5")) == entry, env_id


@pytest.mark.parametrize(("algo", "env_id"), _yaml_cases())
def test_every_yaml_entry_constructs_its_model(algo, env_id, tmp_path, capsys):
    """Each entry goes through rl-zoo3's own preprocessing (schedules, normalize, policy_kwargs) and builds."""
    _skip_unless_makeable(env_id)
    manager = zoo.PGExtrasExperimentManager(argparse.Namespace(), algo, env_id, str(tmp_path), seed=0, device="cpu")
    assert Path(manager.config).samefile(ROOT / "zoo_configs" / f"{algo}.yml")
    hyperparams, saved = manager.read_hyperparameters()  # raises on a key the constructor does not accept
    assert manager.n_timesteps == 0 and saved["n_timesteps"] > 0
    hyperparams, manager.env_wrapper, _, manager.vec_env_wrapper = manager._preprocess_hyperparams(hyperparams)
    env = manager.create_envs(manager.n_envs, no_log=True)
    try:
        model = zoo_utils.ALGOS[algo](env=env, seed=0, device="cpu", **hyperparams)
        assert type(model) is OURS[algo]
        assert model.n_envs == saved.get("n_envs", 1)
        if algo == "grpo":
            assert model.n_envs % model.group_size == 0
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------------------------------
# End to end: train (subprocess, module entry point), enjoy (headless), <Algo>.load
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", [*sorted(OURS), zoo.CONTRIB_TRPO])
def test_train_then_enjoy_and_load(algo, tmp_path, capsys):
    logs = tmp_path / "logs"
    result = _run_module(
        *("train", "--algo", algo, "--env", "CartPole-v1", "-n", "1500", "-f", str(logs), "--seed", "3"),
        *("--eval-freq", "1000", "--eval-episodes", "2", "--num-threads", "1", "--log-interval", "-2"),
        *("-params", *SHORT[algo]),
        cwd=tmp_path,
    )
    expected_config = zoo.config_path(algo)
    assert f"Loading hyperparameters from: {expected_config}" in result.stdout
    run_dir = logs / algo / "CartPole-v1_1"
    model_path = run_dir / "CartPole-v1.zip"
    assert model_path.is_file() and (run_dir / "best_model.zip").is_file()
    assert np.load(run_dir / "evaluations.npz")["results"].shape == (1, 2)
    # rl-zoo3 saves the hyperparameters it used (an OrderedDict, hence the unsafe loader, as rl-zoo3's enjoy does)
    saved = dict(yaml.load((run_dir / "CartPole-v1" / "config.yml").read_text(), Loader=yaml.UnsafeLoader))
    with open(expected_config) as file:
        assert saved["n_timesteps"] == yaml.safe_load(file)["CartPole-v1"]["n_timesteps"]
    assert saved["n_envs"] == int(SHORT[algo][0].split(":")[1])

    # <Algo>.load restores our class (not sb3-contrib's TRPO under the name "trpo") and acts
    cls = OURS.get(algo, ContribTRPO)
    model = cls.load(model_path, device="cpu")
    assert type(model) is cls and model.num_timesteps >= 1500
    action, _ = model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    assert model.action_space.contains(int(action))

    # enjoy: rl-zoo3's replay script on the saved model, no rendering
    capsys.readouterr()
    zoo.main(["enjoy", "--algo", algo, "--env", "CartPole-v1", "-f", str(logs), "--no-render", "-n", "600", "--seed", "0"])
    out = capsys.readouterr().out
    assert f"Loading {logs / algo / 'CartPole-v1_1' / 'CartPole-v1.zip'}" in out
    assert "Mean reward:" in out


def test_enjoy_defaults_to_train_log_folder_for_our_algorithms(tmp_path, monkeypatch, capsys):
    # rl-zoo3's enjoy default (-f rl-trained-agents) would try the Hugging Face hub, which has none of our agents.
    monkeypatch.chdir(tmp_path)
    with pytest.raises((AssertionError, ValueError)) as error:
        zoo.main(["enjoy", "--algo", "grpo", "--env", "CartPole-v1", "--no-render"])
    assert os.path.join("logs", "grpo") in str(error.value)


# ---------------------------------------------------------------------------------------------------------------------
# optimize: Optuna samplers of our algorithms
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", sorted(OURS))
def test_samplers_give_constructible_models_and_convert_back(algo):
    n_envs = 8
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    manager = zoo.PGExtrasExperimentManager(argparse.Namespace(), algo, "CartPole-v1", "unused", seed=0)
    base, _ = manager.read_hyperparameters()
    base = {k: v for k, v in base.items() if k not in zoo.ZOO_ONLY_KEYS}
    from stable_baselines3.common.env_util import make_vec_env

    env = make_vec_env("CartPole-v1", n_envs=n_envs)
    for _ in range(4):
        trial = study.ask()
        sampled = zoo.HYPERPARAMS_SAMPLER[algo](trial, 0, n_envs, {})
        # rl-zoo3 rebuilds hyperparameters from stored trial params (--trial-id) with the converter
        assert zoo.HYPERPARAMS_CONVERTER[algo](trial.params) == sampled
        zoo.check_hyperparameters(algo, {**base, **sampled})
        model = OURS[algo](env=env, device="cpu", **{**base, **sampled})
        assert model.learning_rate == sampled.get("learning_rate", base.get("learning_rate", model.learning_rate))
        if algo == "trpo_group":  # critic-free TRPO
            assert model.advantage_estimator == "group" and model.policy.value_net is None
        if algo == "grpo":  # any group size works with any number of envs
            for key in ("group_size", "beta", "clip_range_high", "target_kl", "loss_aggregation"):
                assert key in trial.params
        study.tell(trial, 0.0)
    env.close()


@pytest.mark.parametrize(("algo", "lowest_gamma"), [("reinforce", 0.9), ("reinforce_baseline", 0.9), ("trpo", 0.97)])
def test_critic_free_searches_reach_short_horizons(algo, lowest_gamma):
    """The REINFORCE searches sample gamma down to 0.9 (their Pendulum entries use it); the others keep rl-zoo3's
    range (gamma >= 0.97)."""
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    zoo.HYPERPARAMS_SAMPLER[algo](trial, 0, 4, {})
    distribution = trial.distributions["one_minus_gamma"]
    assert math.isclose(1.0 - distribution.high, lowest_gamma) and distribution.log


def test_grpo_sampler_works_with_one_env():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = zoo.sample_grpo_params(trial, 0, 1, {})
    assert params["group_size"] >= 2


def test_optimize_two_trials(tmp_path):
    logs = tmp_path / "logs"
    _run_module(
        *("optimize", "--algo", "grpo", "--env", "CartPole-v1", "-n", "600", "--n-trials", "2", "--n-evaluations", "1"),
        *("--sampler", "random", "--pruner", "none", "--no-optim-plots", "--eval-episodes", "2", "--seed", "0"),
        *("-f", str(logs), "--num-threads", "1", "-params", "n_envs:4"),
        cwd=tmp_path,
        timeout=240,
    )
    (report,) = (logs / "grpo").glob("report_CartPole-v1_2-trials-600-random-none_*.csv")
    trials = pd.read_csv(report)
    assert len(trials) == 2 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    for key in ("group_size", "beta", "clip_range_high", "target_kl", "clip_range", "advantage_scale"):
        assert f"params_{key}" in trials.columns
    assert set(trials["params_group_size"]) <= {2, 4, 8, 16}  # any group size works with any number of envs


def test_optimize_scores_each_trial_on_several_seeds(tmp_path):
    """--trial-seeds: one run per seed, the trial's value is their mean; --tune-keys: only those keys are sampled;
    --trials-csv: one row per trial with the running best (the best-so-far curve of the tuning protocol)."""
    logs, table = tmp_path / "logs", tmp_path / "trials.csv"
    _run_module(
        *("optimize", "--algo", "grpo", "--env", "CartPole-v1", "-n", "600", "--n-trials", "3", "--n-evaluations", "1"),
        *("--sampler", "random", "--pruner", "none", "--no-optim-plots", "--eval-episodes", "2", "--seed", "0"),
        *("-f", str(logs), "--num-threads", "1", "-params", "n_envs:4", "--trial-seeds", "0", "1"),
        *("--tune-keys", "learning_rate", "n_epochs", "--trials-csv", str(table)),
        cwd=tmp_path,
        timeout=240,
    )
    rows = pd.read_csv(table)
    assert list(rows["trial"]) == [0, 1, 2]
    for _, row in rows.iterrows():
        finals = [float(x) for x in row["finals"].split()]
        assert len(finals) == 2 and row["value"] == pytest.approx(np.mean(finals), abs=0.06)
        assert set(json.loads(row["hyperparams"])) == {"learning_rate", "n_epochs"}
    assert list(rows["best_so_far"]) == pytest.approx(list(rows["value"].cummax()), abs=0.01)


def test_optimize_trial_options_are_checked(tmp_path, capsys):
    base = ["optimize", "--algo", "grpo", "--env", "CartPole-v1", "-f", str(tmp_path), "--n-trials", "1", "-n", "100"]
    assert "held-out report seeds" in _cli_error([*base, "--trial-seeds", "0", "101"], capsys)
    assert "each seed once" in _cli_error([*base, "--trial-seeds", "1", "1"], capsys)
    assert "group_sise" in _cli_error([*base, "--trial-seeds", "0", "--tune-keys", "group_sise"], capsys)
    assert "go with --trial-seeds" in _cli_error([*base, "--tune-keys", "learning_rate"], capsys)
    table = tmp_path / "trials.csv"
    table.write_text("trial,value\n0,1.0\n")
    assert "this is a new search" in _cli_error([*base, "--trial-seeds", "0", "--trials-csv", str(table)], capsys)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    new_study = [*base, "--trial-seeds", "0", "--trials-csv", str(table), "--storage", storage, "--study-name", "s"]
    assert "this is a new search" in _cli_error(new_study, capsys)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({})
    study.ask()
    zoo._check_trials_csv(table, storage, "s")  # resuming the study the table belongs to: appended to


# ---------------------------------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------------------------------
def test_demo_trains_evaluates_and_plots(tmp_path, capsys):
    folder = tmp_path / "demo"
    zoo.main(["demo", "-f", str(folder), "-n", "1500", "--eval-freq", "1000", "--no-progress", "--final-eval-episodes", "3"])
    out = capsys.readouterr().out
    run_dir = folder / "grpo" / "CartPole-v1_1"
    png = run_dir / "learning_curve.png"
    assert "Evaluation of grpo on CartPole-v1: mean return" in out and str(png) in out
    assert str(run_dir / "CartPole-v1.zip") in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------
def test_unknown_algorithm_lists_known_ones():
    with pytest.raises(zoo.ZooUsageError) as error:
        zoo.main(["train", "--algo", "grop", "--env", "CartPole-v1"])
    message = str(error.value)
    assert "'grop'" in message and "did you mean 'grpo'" in message
    for name in [*OURS, zoo.CONTRIB_TRPO, "ppo", "a2c"]:
        assert name in message


def test_unknown_env_id_lists_close_and_configured_ones():
    with pytest.raises(zoo.ZooUsageError) as error:
        zoo.main(["train", "--algo", "grpo", "--env", "CartPol-v1"])
    message = str(error.value)
    assert "'CartPol-v1'" in message and "'CartPole-v1'" in message
    assert all(env_id in message for env_id in REQUIRED_ENVS)


def test_unknown_config_key_is_named(tmp_path):
    with pytest.raises(zoo.ZooConfigError) as error:
        zoo.main(["train", "--algo", "grpo", "--env", "CartPole-v1", "-f", str(tmp_path), "-params", "group_sise:4"])
    message = str(error.value)
    assert "'group_sise'" in message and "did you mean 'group_size'" in message and "GRPO" in message
    assert zoo.config_path("grpo") in message


def test_user_conf_file_is_used_and_checked(tmp_path):
    conf = tmp_path / "mine.yml"
    conf.write_text("CartPole-v1:\n  policy: MlpPolicy\n  n_timesteps: 1000\n  clip_range_hihg: 0.3\n")
    with pytest.raises(zoo.ZooConfigError) as error:
        zoo.main(["train", "--algo", "grpo", "--env", "CartPole-v1", "-f", str(tmp_path), "-conf", str(conf)])
    assert "'clip_range_hihg'" in str(error.value) and str(conf) in str(error.value)
    # an env without an entry (and no `default`) names the entries that exist
    with pytest.raises(zoo.ZooConfigError, match=r"Pendulum-v1.*Entries there: CartPole-v1"):
        zoo.main(["train", "--algo", "grpo", "--env", "Pendulum-v1", "-f", str(tmp_path), "-conf", str(conf)])


def test_invalid_yaml_names_the_file(tmp_path):
    conf = tmp_path / "broken.yml"
    conf.write_text("CartPole-v1:\n  policy: MlpPolicy\nnot yaml here\n  n_timesteps: 10\n")
    with pytest.raises(zoo.ZooConfigError, match=r"broken\.yml is not valid YAML"):
        zoo.main(["train", "--algo", "grpo", "--env", "CartPole-v1", "-f", str(tmp_path), "-conf", str(conf)])


def test_cli_prints_errors_without_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pg-extras-zoo", "trian", "--algo", "grpo"])
    with pytest.raises(SystemExit) as exit_info:
        zoo.main()
    assert "pg-extras-zoo: error: Unknown command 'trian' (did you mean 'train'?)" in str(exit_info.value.code)
    zoo.main(["--help"])
    assert "optimize" in capsys.readouterr().out


def test_docstring_examples():
    import doctest

    result = doctest.testmod(zoo, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


@pytest.mark.parametrize(
    "value,match", [("learning_rate:-1", "learning_rate=-1 is invalid"), ('gamma:"0.99"', "without quotes")]
)
def test_bad_param_values_are_config_errors_without_traceback(tmp_path, value, match):
    with pytest.raises(zoo.ZooConfigError, match=match):
        zoo.main(["train", "--algo", "grpo", "--env", "CartPole-v1", "-n", "64", "-f", str(tmp_path), "-params", value])


def _cli_error(argv: list[str], capsys) -> str:
    """What the command line prints for ``argv``: one line, no traceback (SystemExit with the message)."""
    with pytest.raises(SystemExit) as exit_info:
        _run_main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("pg-extras-zoo: error: ") and "\n" not in message and "Traceback" not in message
    return message


def _run_main(argv: list[str]) -> None:
    saved = sys.argv
    sys.argv = ["pg-extras-zoo", *argv]
    try:
        zoo.main()
    finally:
        sys.argv = saved


def test_bad_files_and_flags_are_one_line_errors(tmp_path, capsys):
    listing = tmp_path / "list.yml"
    listing.write_text("- CartPole-v1\n- Pendulum-v1\n")
    string_rate = tmp_path / "rate.yml"
    string_rate.write_text("CartPole-v1:\n  policy: MlpPolicy\n  n_timesteps: 1000\n  learning_rate: 1e-3\n")
    base = ["--algo", "grpo", "--env", "CartPole-v1", "-f", str(tmp_path)]
    assert "top level must be a mapping" in _cli_error(["train", *base, "-conf", str(listing)], capsys)
    message = _cli_error(["train", *base, "-conf", str(string_rate)], capsys)
    assert "learning_rate: '1e-3' is a string" in message and "!!float 1e-3" in message
    assert "--n-trials 0" in _cli_error(["optimize", *base, "--n-trials", "0", "-n", "100"], capsys)
    assert "No trained grpo model" in _cli_error(["enjoy", *base], capsys)
    storage = ["optimize", *base, "--n-trials", "1", "-n", "100", "--study-name", "s", "--storage"]
    assert "is not a database URL" in _cli_error([*storage, "no-url"], capsys)
    assert "cannot be opened" in _cli_error([*storage, f"sqlite:///{tmp_path}/missing/dir/x.db"], capsys)
    model = tmp_path / "grpo.zip"
    sb3_pg_extras.GRPO("MlpPolicy", "CartPole-v1", n_steps=16).save(model)
    trpo = ["train", "--algo", "trpo", "--env", "CartPole-v1", "-n", "600", "-f", str(tmp_path)]
    message = _cli_error([*trpo, "-i", str(model)], capsys)
    assert "was saved by GRPO, not TRPO" in message


def test_optimize_refuses_the_report_seeds(tmp_path, capsys):
    base = ["optimize", "--algo", "grpo", "--env", "CartPole-v1", "-f", str(tmp_path), "--n-trials", "1", "-n", "100"]
    for seed in ("100", "104"):
        assert "held-out report seeds" in _cli_error([*base, "--seed", seed], capsys)
