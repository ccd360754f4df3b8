"""Speed of :class:`sb3_pg_extras.TRPO` against ``sb3_contrib.TRPO`` in the same run, on the RL Zoo CartPole-v1 config.

The hyperparameters are read from the installed ``rl_zoo3/hyperparams/trpo.yml`` (CartPole-v1: 2 envs,
``n_steps=512``, ``batch_size=512``, ``n_critic_updates=20``, ...). Two measurements, the two algorithms interleaved
so that load changes on a shared machine hit both alike:

* ``learn``: a full ``learn(--steps)`` of each from the same seed: env-steps/s, and the time per update split into
  rollout (``collect_rollouts``: SB3's for sb3-contrib, our collection loop for ours), the vec env's own
  ``step_wait`` inside it (the same code for both: the ceiling of any speed-up), and ``train()``; a third row runs our
  TRPO with SB3's own ``ActorCriticPolicy`` instead of our ``MlpPolicy`` (whose action sampling skips the value head
  and torch's distribution objects), to show what each part contributes;
* ``train``: ``train()`` alone on the same filled rollout buffer, the same weights and optimizer state.

Results go to ``docs/benchmarks/trpo_speed.csv`` and ``.md`` (``--out`` to change; ``python -m benchmarks.readme``
copies the page into ``docs/benchmarks/speed.md`` and the README). Pass ``--cpu-time`` on a
busy machine to measure process CPU time instead of wall time.

Usage::

    python -m benchmarks.trpo_update_speed                      # 3 x learn(20480) of each + 10 train() timings
    python -m benchmarks.trpo_update_speed --steps 10240 --reps 2 --cpu-time
    python -m benchmarks.trpo_update_speed --env Hopper-v5 --out docs/benchmarks/trpo_speed_hopper  # zoo's Hopper-v4 entry
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch as th
import yaml
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy

import sb3_pg_extras.trpo.algo as trpo_algo
from sb3_pg_extras import TRPO

RESULTS = Path(__file__).parent / "results"
CLOCK = time.perf_counter


def zoo_config(env_id: str = "CartPole-v1") -> tuple[int, dict[str, Any]]:
    """``(n_envs, constructor kwargs)`` of rl-zoo3's TRPO config for ``env_id`` (a MuJoCo ``-v5`` env takes the zoo's
    ``-v4`` entry, the newest it has)."""
    import rl_zoo3

    path = Path(rl_zoo3.__file__).parent / "hyperparams" / "trpo.yml"
    table = yaml.safe_load(path.read_text())
    key = env_id if env_id in table else env_id.replace("-v5", "-v4")
    config = dict(table[key])
    n_envs = int(config.pop("n_envs", 1))
    for key in ("n_timesteps", "policy", "normalize", "env_wrapper", "frame_stack", "callback"):
        config.pop(key, None)
    return n_envs, config


def _timed(model: Any, timers: dict[str, float]) -> None:
    """Accumulate the time of ``collect_rollouts``, ``train`` and of the env's ``step_wait`` (the vec env's own work,
    the same for both algorithms) of ``model`` into ``timers``."""
    for owner, name in ((model, "collect_rollouts"), (model, "train"), (model.env, "step_wait")):
        original = getattr(owner, name)

        def wrapper(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            start = CLOCK()
            try:
                return _original(*args, **kwargs)
            finally:
                timers[_name] += CLOCK() - start

        setattr(owner, name, wrapper)


def time_learn(
    cls: type, env_id: str, n_envs: int, config: dict, steps: int, seed: int, policy: Any = "MlpPolicy"
) -> dict[str, float]:
    model = cls(policy, make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device="cpu", **config)
    timers = {"collect_rollouts": 0.0, "train": 0.0, "step_wait": 0.0}
    _timed(model, timers)
    start = CLOCK()
    model.learn(steps)
    elapsed = CLOCK() - start
    updates = max(model._n_updates, 1)
    return {
        "env_steps_per_s": model.num_timesteps / elapsed,
        "rollout_ms_per_update": 1e3 * timers["collect_rollouts"] / updates,
        "train_ms_per_update": 1e3 * timers["train"] / updates,
        "env_ms_per_update": 1e3 * timers["step_wait"] / updates,
    }


def time_train(env_id: str, n_envs: int, config: dict, seed: int, reps: int) -> dict[str, float]:
    """Median ``train()`` time of each on the same buffer, weights and optimizer state (after 4 updates of ours)."""
    ours = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device="cpu", **config)
    contrib = ContribTRPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device="cpu", **config)
    ours.learn(4 * ours.n_steps * ours.n_envs)
    _, callback = ours._setup_learn(ours.n_steps * ours.n_envs, reset_num_timesteps=False)
    ours.collect_rollouts(ours.env, callback, ours.rollout_buffer, ours.n_steps)
    buffer = copy.deepcopy(ours.rollout_buffer)
    contrib.set_logger(ours.logger)
    policy_state = copy.deepcopy(ours.policy.state_dict())
    optim_state = copy.deepcopy(ours.policy.optimizer.state_dict())
    times: dict[str, list[float]] = {"ours": [], "contrib": [], "ours_autograd_fvp": []}
    for rep in range(reps + 1):  # the first repetition is a warm-up
        for name, model in (("ours", ours), ("contrib", contrib), ("ours_autograd_fvp", ours)):
            model.policy.load_state_dict(policy_state)
            model.policy.optimizer.load_state_dict(copy.deepcopy(optim_state))
            model.rollout_buffer = copy.deepcopy(buffer)  # get() flattens the buffer in place
            fast_fvp = trpo_algo.mlp_fvp_fn
            if name == "ours_autograd_fvp":  # the one FVP that needs no MLP: pg_extras.gauss_newton_fvp_fn
                trpo_algo.mlp_fvp_fn = lambda *args, **kwargs: None
            try:
                start = CLOCK()
                model.train()
                elapsed = CLOCK() - start
            finally:
                trpo_algo.mlp_fvp_fn = fast_fvp
            if rep:
                times[name].append(elapsed)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, default=20480, help="env steps of each learn() run")
    parser.add_argument("--reps", type=int, default=3, help="learn() runs of each (interleaved)")
    parser.add_argument("--train-reps", type=int, default=10, help="train() timings of each (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as on a shared CPU)")
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    parser.add_argument(
        "--out", type=Path, default=RESULTS.parent.parent / "docs" / "benchmarks" / "trpo_speed", help="path without suffix"
    )
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    n_envs, config = zoo_config(args.env)

    variants = (
        ("sb3_contrib", ContribTRPO, "MlpPolicy"),
        ("sb3_pg_extras", TRPO, "MlpPolicy"),
        ("sb3_pg_extras, SB3's ActorCriticPolicy", TRPO, ActorCriticPolicy),
    )
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for rep in range(args.reps):
        for name, cls, policy in variants:
            runs[name].append(time_learn(cls, args.env, n_envs, config, args.steps, args.seed + rep, policy))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    train = time_train(args.env, n_envs, config, args.seed, args.train_reps) if args.train_reps else None
    ratio = med["sb3_pg_extras"]["env_steps_per_s"] / med["sb3_contrib"]["env_steps_per_s"]
    stock_ratio = med[variants[2][0]]["env_steps_per_s"] / med["sb3_contrib"]["env_steps_per_s"]

    contrib = med["sb3_contrib"]
    contrib_ms = contrib["rollout_ms_per_update"] + contrib["train_ms_per_update"]
    env_ms = max(contrib["env_ms_per_update"], 1e-9)
    clock = "process CPU time" if args.cpu_time else "wall time"
    setting = (
        f"{args.env}, rl-zoo3 trpo.yml config (n_envs={n_envs}, {config}), learn({args.steps}) x {args.reps} per "
        f"algorithm (medians), {args.threads} torch thread(s), CPU ({platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end), {clock}, torch {th.__version__}"
    )
    rows = [
        {
            "algorithm": name,
            **{k: round(v, 2) for k, v in m.items()},
            "train_ms_same_batch": round(train[key], 2) if train and key else "",
        }
        for (name, m), key in zip(med.items(), ("contrib", "ours", None), strict=True)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# TRPO speed on {args.env}: sb3_pg_extras.TRPO vs sb3_contrib.TRPO",
        "",
        f"Setting: {setting}. Generated by `python -m benchmarks.trpo_update_speed`.",
        "",
        "| algorithm | env-steps/s (learn) | rollout ms / update | of which the env's step | train() ms / update "
        "| train() ms, same batch |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['algorithm']} | {r['env_steps_per_s']:.0f} | {r['rollout_ms_per_update']:.1f} | "
            f"{r['env_ms_per_update']:.1f} | {r['train_ms_per_update']:.1f} | {r['train_ms_same_batch']} |"
            for r in rows
        ),
        "",
        f"learn() speed-up: **{ratio:.2f}x** ({stock_ratio:.2f}x with SB3's ActorCriticPolicy)"
        + (f"; train() speed-up on the same batch: **{train['contrib'] / train['ours']:.2f}x**" if train else ""),
        "",
        *(
            [
                f"Fisher-vector products: train() on the same batch takes {train['ours']:.1f} ms with the MLP products "
                f"without autograd (`pg_extras.mlp_fvp_fn`) and {train['ours_autograd_fvp']:.1f} ms with the autograd "
                f"Gauss-Newton products every other actor uses (`pg_extras.gauss_newton_fvp_fn`): "
                f"{train['ours_autograd_fvp'] / train['ours']:.2f}x, what keeping the second implementation pays.",
                "",
            ]
            if train
            else []
        ),
        f"Ceiling: the vec env's own step (`step_wait`, the same code for both) takes {env_ms:.1f} ms of sb3-contrib's "
        f"{contrib_ms:.1f} ms per update, so an algorithm whose policy, buffer and update cost nothing would run at most "
        f"**{contrib_ms / env_ms:.2f}x** sb3-contrib's env-steps/s here.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return {
        "median": med,
        "train_ms": train,
        "ratio": ratio,
        "stock_policy_ratio": stock_ratio,
        "ceiling": contrib_ms / env_ms,
    }


if __name__ == "__main__":
    main()
