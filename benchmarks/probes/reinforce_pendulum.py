"""Independent probe: REINFORCE (no critic, no group) on a numpy Pendulum, written from Williams (1992) with no RL framework.

The reference point for REINFORCE's Pendulum-v1 cell: if this probe learns at the grid's budget where
``sb3_pg_extras.REINFORCE`` does not, the fault is ours. It shares only the env, the policy and the evaluation with
:mod:`benchmarks.probes.grpo_pendulum` (nothing from pg-extras, SB3, TorchRL or gymnasium).

- data: ``n_envs`` episodes of 200 steps from independent random starts per update;
- advantage: the discounted return-to-go ``G_t``, optionally standardised over the batch (``--normalize``); with
  ``--time-baseline`` minus the batch mean of ``G_t`` at the same ``t`` (a baseline that needs no critic);
- update: one Adam step on ``-mean(log pi(a_t|s_t) * A_t)`` per batch (REINFORCE takes one step per sample);
- a small grid over ``--lrs``, ``--n-envs-list`` and ``--gammas``, each on ``--seeds``.

Usage::

    python -m benchmarks.probes.reinforce_pendulum --seeds 0 1 2 --steps 100000 --out docs/benchmarks/probes/x.csv
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time

import numpy as np
import torch as th

from benchmarks.probes.grpo_pendulum import Policy, VecPendulum, evaluate, play


def run(
    seed: int, steps: int, n_envs: int, gamma: float, lr: float, log_std: float, normalize: bool, time_baseline: bool
) -> float:
    """Train one REINFORCE policy for ``steps`` env steps; the final mean deterministic return over 10 episodes."""
    th.manual_seed(seed)
    rng, eval_rng = np.random.default_rng(seed), np.random.default_rng(seed + 10_000)
    policy = Policy(log_std)
    optimizer = th.optim.Adam(policy.parameters(), lr=lr)
    env, T, done_steps = VecPendulum(n_envs), VecPendulum.max_steps, 0
    while done_steps < steps:
        env.reset(rng, 1)
        obs_buf, act_buf, _, rewards = play(policy, env, T)  # rewards: [T, n]
        rtg, running = np.zeros_like(rewards), np.zeros(n_envs)
        for t in reversed(range(T)):
            running = rewards[t] + gamma * running
            rtg[t] = running
        adv = rtg - rtg.mean(axis=1, keepdims=True) if time_baseline else rtg
        if normalize:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        obs = th.as_tensor(np.stack(obs_buf)).reshape(T * n_envs, 3)
        act = th.stack(act_buf).reshape(T * n_envs, 1)
        log_prob = policy.dist(obs).log_prob(act).sum(-1)
        loss = -(log_prob * th.as_tensor(adv, dtype=th.float32).reshape(-1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done_steps += T * n_envs
    return evaluate(policy, eval_rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--n-envs-list", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    parser.add_argument("--log-std", type=float, default=0.0)
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--time-baseline", action="store_true")
    parser.add_argument("--out", default=None, help="CSV: one row per setting and seed")
    args = parser.parse_args()
    if any(s >= 100 for s in args.seeds):
        parser.error("seeds >= 100 are held out for the report")
    th.set_num_threads(1)
    rows = []
    for lr, n_envs, gamma in itertools.product(args.lrs, args.n_envs_list, args.gammas):
        finals = []
        for seed in args.seeds:
            start = time.perf_counter()
            final = run(seed, args.steps, n_envs, gamma, lr, args.log_std, args.normalize, args.time_baseline)
            finals.append(final)
            rows.append(
                dict(
                    lr=lr,
                    n_envs=n_envs,
                    gamma=gamma,
                    normalize=args.normalize,
                    time_baseline=args.time_baseline,
                    log_std=args.log_std,
                    seed=seed,
                    steps=args.steps,
                    final=round(final, 1),
                    wall_s=round(time.perf_counter() - start, 1),
                )
            )
        print(
            f"lr {lr:g} n_envs {n_envs} gamma {gamma}: finals "
            + " ".join(f"{f:.0f}" for f in finals)
            + f", median {float(np.median(finals)):.0f}",
            flush=True,
        )
        if args.out:
            with open(args.out, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    medians: dict[tuple, list[float]] = {}
    for row in rows:
        medians.setdefault((row["lr"], row["n_envs"], row["gamma"]), []).append(row["final"])
    best = max(medians, key=lambda k: float(np.median(medians[k])))
    print(f"best (lr, n_envs, gamma): {best}, median {float(np.median(medians[best])):.0f} over {len(rows)} runs")


if __name__ == "__main__":
    main()
