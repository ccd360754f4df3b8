"""The collection limit of this machine, and each GRPO pipeline's env-steps/s as a fraction of it (same run).

The limit: gymnasium's numpy-vectorised CartPole (``CartPoleVectorEnv``, ``vectorization_mode="vector_entry_point"``)
stepped by a torch MLP policy (64-64 tanh, SB3's default ``MlpPolicy`` actor, a categorical sample per step) with
no learning and no storage: the fastest any on-policy pipeline can collect here, for 64 / 256 / 1024 envs. Then, at
``--pipeline-envs`` envs (default 256), ``learn()`` of SB3 GRPO (our zoo CartPole config, ``n_envs`` raised) on
SB3's ``DummyVecEnv`` and on :class:`sb3_pg_extras.GymnasiumVecEnv` over gymnasium's ``SyncVectorEnv``
(``AutoresetMode.SAME_STEP``; the numpy-vectorised CartPole resets one step late, which SB3's ``VecEnv`` cannot
express, see that class), SB3 PPO on ``DummyVecEnv``, and our TorchRL GRPO pipeline (``torchrl_configs/grpo.yaml``,
``num_envs`` raised). One torch thread; each figure is env steps / wall seconds of the whole run.

Results go to ``docs/benchmarks/collection_limit.csv`` and ``.md`` (``python -m benchmarks.readme`` copies the page
into ``docs/benchmarks/speed.md``).

Usage::

    python -m benchmarks.collection_limit                 # limit at 64 / 256 / 1024 envs, pipelines at 256
    python -m benchmarks.collection_limit --steps 20000   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
import yaml
from torch import nn

from pg_extras import sample_categorical

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "collection_limit"
ZOO = Path(__file__).resolve().parent.parent / "zoo_configs"
NOTE = (
    "Why the GRPO rows stay far from the limit: the limit is gymnasium's numpy-vectorised CartPole, and neither "
    "pipeline can run grouped GRPO on it. A group needs its members to start from one state, i.e. a seeded reset of"
    " one sub-env, and `CartPoleVectorEnv` resets its sub-envs only all together (one generator) or one step after "
    "they end (`NEXT_STEP`, in a step whose action is ignored, which SB3's `VecEnv` contract cannot express: "
    "`GymnasiumVecEnv` refuses it). The fastest env that GRPO can use here is gymnasium's `SyncVectorEnv`, a Python"
    " loop over the sub-envs; its own step is most of the SB3 GRPO run (profiled)."
)


def collection_limit(n_envs: int, steps: int, seed: int = 0) -> float:
    """Env-steps/s of a torch MLP policy on ``CartPoleVectorEnv(n_envs)``: no learning, no storage."""
    env = gym.make_vec("CartPole-v1", num_envs=n_envs, vectorization_mode="vector_entry_point")
    policy = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    obs, _ = env.reset(seed=seed)
    n_iters = max(steps // n_envs, 10)
    start = time.perf_counter()
    with th.inference_mode():
        for _ in range(n_iters):
            actions, _ = sample_categorical(policy(th.as_tensor(obs)))
            obs, *_ = env.step(actions.numpy())
    elapsed = time.perf_counter() - start
    env.close()
    return n_iters * n_envs / elapsed


def _zoo_entry(algo: str, env_id: str) -> dict[str, Any]:
    entry = dict(yaml.safe_load((ZOO / f"{algo}.yml").read_text())[env_id])
    for key in ("n_timesteps", "policy", "n_envs", "normalize"):
        entry.pop(key, None)
    return entry


def sb3_pipeline(kind: str, n_envs: int, steps: int, seed: int = 0) -> float:
    """Env-steps/s of ``learn(steps)``: ``kind`` in ``grpo``, ``grpo_gymnasium_vec_env``, ``ppo``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_pg_extras import GRPO, GymnasiumVecEnv

    if kind == "grpo_gymnasium_vec_env":
        vector = gym.make_vec(
            "CartPole-v1",
            num_envs=n_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        )
        env: Any = GymnasiumVecEnv(vector)
    else:
        env = make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed)
    if kind == "ppo":
        import rl_zoo3

        entry = dict(yaml.safe_load((Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml").read_text())["CartPole-v1"])
        for key in ("n_timesteps", "policy", "n_envs", "normalize"):
            entry.pop(key, None)
        for key in ("learning_rate", "clip_range"):  # rl-zoo3's "lin_<x>" strings
            if isinstance(entry.get(key), str) and entry[key].startswith("lin_"):
                entry[key] = float(entry[key][4:])
        model: Any = PPO("MlpPolicy", env, seed=seed, device="cpu", **entry)
    else:
        model = GRPO("MlpPolicy", env, seed=seed, device="cpu", **_zoo_entry("grpo", "CartPole-v1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (GymnasiumVecEnv: groups in lock-step rounds, said once)
        start = time.perf_counter()
        model.learn(steps)
        elapsed = time.perf_counter() - start
    return model.num_timesteps / elapsed


def torchrl_pipeline(n_envs: int, steps: int, seed: int = 0) -> float:
    """Env-steps/s of our TorchRL GRPO pipeline at ``n_envs`` envs and 16 steps per env per batch (SB3 GRPO's zoo
    ``n_steps``); one evaluation episode at the end."""
    from benchmarks.torchrl_runner import run_torchrl

    start = time.perf_counter()
    run_torchrl(
        "torchrl_grpo",
        "CartPole-v1",
        seed=seed,
        budget=steps,
        eval_every=steps,
        n_eval_episodes=1,
        hyperparams={"num_envs": n_envs, "frames_per_batch": 16 * n_envs},
    )
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200_000, help="env steps of each measurement")
    parser.add_argument("--limit-envs", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--pipeline-envs", type=int, default=256)
    parser.add_argument("--out", type=Path, default=OUT, help="path without suffix")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    for n in args.limit_envs:
        rows.append(
            {"what": "collection limit (policy + CartPoleVectorEnv)", "n_envs": n, "sps": collection_limit(n, args.steps)}
        )
        print(rows[-1], flush=True)
    limit = next((r["sps"] for r in rows if r["n_envs"] == args.pipeline_envs), None)
    if limit is None:
        limit = collection_limit(args.pipeline_envs, args.steps)
    pipelines = [
        ("SB3 GRPO, DummyVecEnv", lambda: sb3_pipeline("grpo", args.pipeline_envs, args.steps)),
        (
            "SB3 GRPO, GymnasiumVecEnv(SyncVectorEnv)",
            lambda: sb3_pipeline("grpo_gymnasium_vec_env", args.pipeline_envs, args.steps),
        ),
        ("SB3 PPO (rl-zoo3 config), DummyVecEnv", lambda: sb3_pipeline("ppo", args.pipeline_envs, args.steps)),
        (
            "TorchRL GRPO (ours, torchrl_configs entry, 16 frames per env per batch)",
            lambda: torchrl_pipeline(args.pipeline_envs, args.steps),
        ),
    ]
    for name, measure in pipelines:
        rows.append({"what": name, "n_envs": args.pipeline_envs, "sps": measure()})
        print(rows[-1], flush=True)
    for row in rows:
        row["fraction_of_limit"] = row["sps"] / limit if not row["what"].startswith("collection") else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["what", "n_envs", "sps", "fraction_of_limit"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "# Collection limit and GRPO pipelines on CartPole-v1",
        "",
        f"Setting: {args.steps} env steps per measurement, 1 torch thread, wall time, CPU ({platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end), torch {th.__version__}. "
        "Generated by `python -m benchmarks.collection_limit`.",
        "",
        "| what | envs | env-steps/s | fraction of the limit at the same envs |",
        "|---|---|---|---|",
        *(
            f"| {r['what']} | {r['n_envs']} | {r['sps']:.0f} | "
            + (f"{100 * r['fraction_of_limit']:.1f}%" if r["fraction_of_limit"] != "" else "")
            + " |"
            for r in rows
        ),
        "",
        NOTE,
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
