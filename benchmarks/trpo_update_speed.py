"""Update-step speed of :class:`sb3_pg_extras.TRPO` against ``sb3_contrib.TRPO`` on the same batch and weights.

Both models get the RL Zoo CartPole-v1 hyperparameters, the same policy weights (and optimizer state) and the same
filled rollout buffer; ``train()`` of each is timed ``--reps`` times, restoring weights before every repetition.
Prints the median times, our actor / critic split, and the speed-up ratio. ``--learn N`` also times a full
``learn(N)`` of each from the same seed (overall env-steps/s, rollouts included). On a busy shared CPU machine pass
``--cpu-time`` to measure process CPU time instead of wall time.

Usage::

    python -m benchmarks.trpo_update_speed            # update step only
    python -m benchmarks.trpo_update_speed --learn 20000
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import torch as th
from sb3_contrib import TRPO as ContribTRPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_pg_extras import TRPO

ZOO_CARTPOLE: dict[str, Any] = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)


def _filled_models(env_id: str, n_envs: int, seed: int, device: str) -> tuple[TRPO, ContribTRPO]:
    ours = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device=device, **ZOO_CARTPOLE)
    contrib = ContribTRPO(
        "MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device=device, **ZOO_CARTPOLE
    )
    # A few updates first, so that the batch is not the trivial first one; then one more rollout to train on.
    ours.learn(4 * ours.n_steps * ours.n_envs)
    _, callback = ours._setup_learn(ours.n_steps * ours.n_envs, reset_num_timesteps=False)
    ours.collect_rollouts(ours.env, callback, ours.rollout_buffer, ours.n_steps)
    contrib.policy.load_state_dict(ours.policy.state_dict())
    contrib.policy.optimizer.load_state_dict(ours.policy.optimizer.state_dict())
    for group in contrib.policy.optimizer.param_groups:  # keep sb3-contrib's own optimizer implementation
        group["fused"] = None
    contrib.set_logger(ours.logger)
    return ours, contrib


CLOCK = time.perf_counter


def _time_train(model: Any, buffer: Any, reps: int, split: bool = False) -> dict[str, float]:
    policy_state = copy.deepcopy(model.policy.state_dict())
    optim_state = copy.deepcopy(model.policy.optimizer.state_dict())
    times, actor, critic = [], [], []
    timers = {"actor": 0.0, "critic": 0.0}
    if split:
        for name in ("actor", "critic"):
            original = getattr(model, f"_train_{name}")

            def timed(*args: Any, _original: Any = original, _name: str = name) -> Any:
                start = CLOCK()
                out = _original(*args)
                timers[_name] += CLOCK() - start
                return out

            setattr(model, f"_train_{name}", timed)
    for _ in range(reps + 1):  # the first repetition is a warm-up
        model.policy.load_state_dict(policy_state)
        model.policy.optimizer.load_state_dict(copy.deepcopy(optim_state))  # (load_state_dict keeps the tensors)
        model.rollout_buffer = copy.deepcopy(buffer)  # sb3-contrib flattens the buffer in place
        timers.update(actor=0.0, critic=0.0)
        start = CLOCK()
        model.train()
        times.append(CLOCK() - start)
        actor.append(timers["actor"])
        critic.append(timers["critic"])
    out = {"train": statistics.median(times[1:])}
    if split:
        out.update(actor=statistics.median(actor[1:]), critic=statistics.median(critic[1:]))
    return out


def _time_learn(cls: type, env_id: str, n_envs: int, seed: int, steps: int, device: str) -> float:
    model = cls("MlpPolicy", make_vec_env(env_id, n_envs=n_envs, seed=seed), seed=seed, device=device, **ZOO_CARTPOLE)
    start = CLOCK()
    model.learn(steps)
    return steps / (CLOCK() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--n-envs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as on a shared CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--learn", type=int, default=0, help="also time learn(N) of both (env-steps/s)")
    parser.add_argument("--learn-reps", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true", help="measure process CPU time (steadier on a busy CPU machine)")
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time

    ours, contrib = _filled_models(args.env, args.n_envs, args.seed, args.device)
    buffer = copy.deepcopy(ours.rollout_buffer)
    n = buffer.buffer_size * buffer.n_envs
    # Interleave the two, so that load changes on a shared machine hit both alike.
    ours_t, contrib_t = [], []
    for _ in range(args.reps):
        ours_t.append(_time_train(ours, buffer, 1, split=True))
        contrib_t.append(_time_train(contrib, buffer, 1))
    t_ours = {k: statistics.median(d[k] for d in ours_t) for k in ours_t[0]}
    t_contrib = statistics.median(d["train"] for d in contrib_t)
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"{args.env}, batch {n}, zoo hyperparameters, {args.threads} torch thread(s), device {args.device}, {clock}")
    print(f"sb3_contrib.TRPO.train(): {1e3 * t_contrib:8.1f} ms")
    print(
        f"sb3_pg_extras.TRPO.train(): {1e3 * t_ours['train']:6.1f} ms "
        f"(actor step {1e3 * t_ours['actor']:.1f} ms, critic {1e3 * t_ours['critic']:.1f} ms)"
    )
    print(f"update speed-up: {t_contrib / t_ours['train']:.2f}x")
    if args.learn:
        fps_contrib, fps_ours = [], []
        for _ in range(args.learn_reps):  # interleaved
            fps_contrib.append(_time_learn(ContribTRPO, args.env, args.n_envs, args.seed, args.learn, args.device))
            fps_ours.append(_time_learn(TRPO, args.env, args.n_envs, args.seed, args.learn, args.device))
        fc, fo = statistics.median(fps_contrib), statistics.median(fps_ours)
        print(
            f"learn({args.learn}), median of {args.learn_reps}: sb3_contrib {fc:.0f} env-steps/s, ours {fo:.0f} env-steps/s, "
            f"speed-up {fo / fc:.2f}x"
        )


if __name__ == "__main__":
    main()
