"""Two `optimize` workers started at once on one new SQLite storage fill one Optuna study (issue: scale-out)."""

from __future__ import annotations

import subprocess
import sys

import optuna


def test_two_workers_fill_one_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "sb3_pg_extras.zoo", "optimize", "--algo", "grpo", "--env", "CartPole-v1", "-n", "256",
             "--n-trials", "2", "--n-jobs", "1", "--sampler", "random", "--pruner", "none", "--storage", storage,
             "--study-name", "shared", "-f", str(tmp_path / f"logs{w}"), "--seed", str(w), "--eval-episodes", "2",
             "--n-evaluations", "1", "-params", "n_envs:2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for w in (1, 2)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4  # 2 trials from each worker, in one study
    assert len({t.number for t in complete}) == 4
