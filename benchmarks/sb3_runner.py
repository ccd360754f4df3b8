"""Run one SB3 algorithm on one env with one seed, RL-Zoo style, and record an evaluation curve.

Hyperparameters come from RL Zoo YAML files: ours from ``zoo_configs/<algo>.yml``, the competitors' (SB3 A2C / PPO,
sb3-contrib TRPO) from rl-zoo3's own ``hyperparams/<algo>.yml``. The model is built by rl-zoo3's ``ExperimentManager``
(schedules, wrappers, normalisation exactly as ``rl_zoo3.train``); evaluation runs in a callback and its time is excluded
from the training wall time, so env-steps/s measures collection + updates only. Evaluation: ``n_eval_episodes``
deterministic episodes on a separate vectorised env (one episode per sub-env, seeds ``seed + 10000`` onwards).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.vec_env import VecEnv, sync_envs_normalization

from benchmarks.common import Curve
from sb3_pg_extras.registry import ALGORITHMS

# name -> (class path, config source, YAML file). "ours": zoo_configs/<file> (from the one registry of our algorithm
# names); "zoo": rl_zoo3/hyperparams/<file>, the peers' own tuned files.
SB3_ALGOS: dict[str, tuple[str, str, str]] = {
    **{name: (f"{e.module}:{e.class_name}", "ours", e.config) for name, e in ALGORITHMS.items()},
    "trpo_contrib": ("sb3_contrib:TRPO", "zoo", "trpo.yml"),
    "a2c": ("stable_baselines3:A2C", "zoo", "a2c.yml"),
    "ppo": ("stable_baselines3:PPO", "zoo", "ppo.yml"),
}


def load_class(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def config_path(source: str, key: str) -> str:
    if source == "ours":
        local = Path(__file__).resolve().parent.parent / "zoo_configs" / key
        if local.is_file():
            return str(local)
        return str(resources.files("sb3_pg_extras.zoo_configs") / key)
    import rl_zoo3

    return str(Path(rl_zoo3.__file__).parent / "hyperparams" / key)


def zoo_entry(name: str, env_id: str) -> dict | None:
    """The hyperparameters ``run_sb3(name, env_id, ...)`` starts from (the env's entry of the YAML file), None if absent.

    rl-zoo3's own files tune the MuJoCo envs under ``-v4`` only: for the peers a ``-v5`` env takes its ``-v4`` entry
    (the same settings rl-zoo3 users run; our ``zoo_configs/`` have both names).
    """
    _, source, key = SB3_ALGOS[name]
    with open(config_path(source, key)) as f:
        table = yaml.safe_load(f)  # as rl-zoo3 reads them
    entry = table.get(env_id)
    if entry is None and source == "zoo" and env_id.endswith("-v5"):
        entry = table.get(env_id[: -len("-v5")] + "-v4")
    return dict(entry) if isinstance(entry, dict) else None


class _EvalAndTime(BaseCallback):
    """Evaluate every ``eval_every`` env steps; keep evaluation out of the training clock; optionally stop at a threshold."""

    def __init__(self, eval_env: VecEnv, eval_every: int, n_episodes: int, stop_at: float | None, curve: Curve):
        super().__init__()
        self.eval_env, self.eval_every, self.n_episodes, self.stop_at, self.curve = (
            eval_env,
            eval_every,
            n_episodes,
            stop_at,
            curve,
        )
        self.next_eval = eval_every
        self.stopped = False
        self.eval_time = 0.0
        self.t0 = 0.0

    def _on_training_start(self) -> None:
        self.t0 = time.perf_counter()

    def evaluate(self) -> float:
        start = time.perf_counter()
        train_env = self.model.get_env()
        if train_env is not None:
            sync_envs_normalization(train_env, self.eval_env)
        mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes, deterministic=True, warn=False)
        self.curve.steps.append(int(self.num_timesteps))
        self.curve.mean.append(float(mean))
        self.curve.std.append(float(std))
        self.curve.train_time.append(start - self.t0 - self.eval_time)
        self.eval_time += time.perf_counter() - start
        return float(mean)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_eval:
            self.next_eval += self.eval_every
            mean = self.evaluate()
            if self.stop_at is not None and mean >= self.stop_at:
                self.stopped = True
                return False
        return True


class _Collect(KVWriter):
    """An SB3 logger output that appends each dump's numbers to a list."""

    def __init__(self, out: list[dict[str, float]]) -> None:
        self.out = out

    def write(self, key_values: dict, key_excluded: dict, step: int = 0) -> None:
        self.out.append({"step": step, **{k: float(v) for k, v in key_values.items() if isinstance(v, (int, float))}})


def run_sb3(
    name: str,
    env_id: str,
    seed: int,
    budget: int,
    eval_every: int,
    n_eval_episodes: int = 10,
    stop_at: float | None = None,
    hyperparams: dict | None = None,
    logged: list[dict[str, float]] | None = None,
) -> Curve:
    """Train ``name`` on ``env_id`` for ``budget`` steps (or until the eval mean reaches ``stop_at``).

    ``logged``: a list that receives every logger dump of the run (SB3's ``rollout/...`` and ``train/...`` values).
    """
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS

    class_path, source, key = SB3_ALGOS[name]
    entry = zoo_entry(name, env_id)
    if entry is None:
        raise ValueError(f"{config_path(source, key)} has no entry for {env_id}")
    zoo_key = f"bench_{name}"
    ALGOS[zoo_key] = load_class(class_path)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as log_folder:
        config = config_path(source, key)
        with open(config) as f:
            if env_id not in yaml.safe_load(f):  # a -v5 env on rl-zoo3's -v4 entry: a file with that entry alone
                config = str(Path(log_folder) / key)
                Path(config).write_text(yaml.safe_dump({env_id: entry}))
        manager = ExperimentManager(
            argparse.Namespace(),
            zoo_key,
            env_id,
            log_folder,
            n_timesteps=budget,
            eval_freq=-1,
            seed=seed,
            verbose=0,
            config=config,
            hyperparams=hyperparams,
            device="cpu",
        )
        with contextlib.redirect_stdout(io.StringIO()):
            model, _ = manager.setup_experiment()
            # one sub-env per evaluation episode (capped), run in lockstep: evaluate_policy counts the episodes of
            # each sub-env, so the mean is over exactly n_eval_episodes complete episodes, with batched predictions
            eval_env = manager.create_envs(min(n_eval_episodes, 32), eval_env=True, no_log=True)
            eval_env.seed(seed + 10_000)  # not the training env's start states (as the TorchRL runner)
        if logged is not None:  # the run's logger: its values into ``logged``, nothing printed or written
            model.set_logger(Logger(None, [_Collect(logged)]))
        curve = Curve()
        callback = _EvalAndTime(eval_env, eval_every, n_eval_episodes, stop_at, curve)
        model.learn(budget, callback=callback)
        if not callback.stopped and (not curve.steps or curve.steps[-1] < model.num_timesteps):
            callback.evaluate()
        model.get_env().close()
        eval_env.close()
    return curve
