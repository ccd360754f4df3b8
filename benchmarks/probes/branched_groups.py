"""Independent probe: branched ("vine") groups against same-start groups for critic-free GRPO on a numpy Pendulum.

The experiment of the critic-free issue: do groups that start from intermediate states of a trunk episode (TRPO's
vine, Schulman et al. 2015 §5.2; VinePPO, Kazemnejad et al. 2024; GiGPO, Feng et al. 2025) beat plain same-start
groups? Nothing here imports pg-extras, SB3, TorchRL or gymnasium; the env, policy, evaluation and PPO-clip update
are those of :mod:`benchmarks.probes.grpo_pendulum` (the recipe that solves Pendulum-v1), so the two schedules differ
only in where a group starts:

- ``same_start``: ``group_size`` episodes of 200 steps from one random start (the recipe);
- ``branched``: one trunk episode per group set, played by the current policy from a random start; every
  ``branch_every`` steps its state (theta, theta-dot: the whole state of Pendulum, restored exactly) starts a group of
  ``group_size`` branches of ``branch_len`` steps (shorter at the end of the episode). A branch step's advantage is
  its return-to-go within the branch minus the group's mean at the same step, standardised over the batch. Trunk steps
  are env steps (they count against the budget) but are not trained on.

Usage (tuning seeds only)::

    python -m benchmarks.probes.branched_groups --seeds 0 1 2 --out docs/benchmarks/tuning/branched_groups_Pendulum.csv
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch as th

from benchmarks.common import append_row, read_rows
from benchmarks.probes.grpo_pendulum import Policy, VecPendulum, evaluate, play


def _rtg(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted return-to-go over the first axis (time) of ``rewards``."""
    out, running = np.zeros_like(rewards), np.zeros(rewards.shape[1:])
    for t in reversed(range(rewards.shape[0])):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def collect_same_start(policy: Policy, rng: np.random.Generator, group_size: int, groups: int, gamma: float):
    """``groups`` groups of ``group_size`` full episodes from one random start each. Returns (obs, act, logp, adv, steps)."""
    env = VecPendulum(group_size * groups)
    env.reset(rng, group_size)
    obs, act, logp, rewards = play(policy, env, VecPendulum.max_steps)
    grouped = _rtg(rewards, gamma).reshape(VecPendulum.max_steps, groups, group_size)
    adv = (grouped - grouped.mean(axis=2, keepdims=True)).reshape(VecPendulum.max_steps, -1)
    n = VecPendulum.max_steps * group_size * groups
    return np.stack(obs).reshape(n, 3), th.stack(act).reshape(n, 1), th.stack(logp).reshape(n), adv.reshape(n), n


def collect_branched(
    policy: Policy,
    rng: np.random.Generator,
    group_size: int,
    trunks: int,
    gamma: float,
    branch_every: int,
    branch_len: int,
):
    """``trunks`` trunk episodes; a group of ``group_size`` branches every ``branch_every`` steps of each."""
    trunk = VecPendulum(trunks)
    trunk.reset(rng, 1)
    states = []  # (theta, theta-dot) of every trunk at each branch point
    steps = 0
    with th.no_grad():
        for t in range(VecPendulum.max_steps):
            if t % branch_every == 0:
                states.append((t, trunk.th.copy(), trunk.thdot.copy()))
            action = policy.dist(th.as_tensor(trunk.obs())).sample()
            trunk.step(action.numpy()[:, 0])
            steps += trunks
    obs_all, act_all, logp_all, adv_all = [], [], [], []
    for t0, theta, thetadot in states:
        length = min(branch_len, VecPendulum.max_steps - t0)
        env = VecPendulum(trunks * group_size)
        env.th, env.thdot = np.repeat(theta, group_size), np.repeat(thetadot, group_size)  # restore the trunk's state
        obs, act, logp, rewards = play(policy, env, length)
        grouped = _rtg(rewards, gamma).reshape(length, trunks, group_size)
        adv = (grouped - grouped.mean(axis=2, keepdims=True)).reshape(length, -1)
        n = length * trunks * group_size
        obs_all.append(np.stack(obs).reshape(n, 3))
        act_all.append(th.stack(act).reshape(n, 1))
        logp_all.append(th.stack(logp).reshape(n))
        adv_all.append(adv.reshape(n))
        steps += n
    return np.concatenate(obs_all), th.cat(act_all), th.cat(logp_all), np.concatenate(adv_all), steps


def ppo_clip_update(
    policy, optimizer, obs, actions, old_log_prob, adv: np.ndarray, n_epochs: int, batch_size: int, clip: float
):
    """``n_epochs`` of PPO-clip on shuffled minibatches, the advantages standardised over the batch (both probes)."""
    b_adv = th.as_tensor((adv - adv.mean()) / (adv.std() + 1e-8), dtype=th.float32)
    for _ in range(n_epochs):
        for idx in th.randperm(len(b_adv)).split(batch_size):
            ratio = (policy.dist(obs[idx]).log_prob(actions[idx]).sum(-1) - old_log_prob[idx]).exp()
            loss = -th.min(ratio * b_adv[idx], ratio.clamp(1 - clip, 1 + clip) * b_adv[idx]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def run(seed: int, schedule: str, steps: int, eval_every: int, **kw) -> list[tuple[int, float]]:
    """Train on ``schedule`` for ``steps`` env steps (trunk steps included); deterministic evaluation curve."""
    th.manual_seed(seed)
    rng, eval_rng = np.random.default_rng(seed), np.random.default_rng(seed + 10_000)
    policy = Policy(math.log(2.0))
    optimizer = th.optim.Adam(policy.parameters(), lr=kw["lr"])
    done, curve, next_eval = 0, [], eval_every
    while done < steps:
        if schedule == "same_start":
            b_obs, b_act, b_logp, adv, n = collect_same_start(policy, rng, kw["group_size"], kw["groups"], kw["gamma"])
        else:
            b_obs, b_act, b_logp, adv, n = collect_branched(
                policy, rng, kw["group_size"], kw["trunks"], kw["gamma"], kw["branch_every"], kw["branch_len"]
            )
        b_obs = th.as_tensor(b_obs)
        ppo_clip_update(policy, optimizer, b_obs, b_act, b_logp, adv, kw["n_epochs"], kw["batch_size"], kw["clip"])
        done += n
        while done >= next_eval:
            curve.append((next_eval, evaluate(policy, eval_rng)))
            next_eval += eval_every
    curve.append((done, evaluate(policy, eval_rng)))
    return curve


#: The schedules compared: the recipe's same-start groups, and branched groups around the quick version's settings
#: (branch every 10-20 steps, 40-80-step branches), each with about the recipe's 6.4k env steps per update.
CANDIDATES: dict[str, dict] = {
    "same_start": dict(schedule="same_start", groups=8),
    "branch10_len40": dict(schedule="branched", trunks=2, branch_every=10, branch_len=40),
    "branch20_len40": dict(schedule="branched", trunks=4, branch_every=20, branch_len=40),
    "branch20_len80": dict(schedule="branched", trunks=2, branch_every=20, branch_len=80),
    "branch50_full": dict(schedule="branched", trunks=3, branch_every=50, branch_len=200),
}


def candidates_parser(doc: str, candidates: dict[str, dict], seeds: list[int], steps: int, eval_every: int):
    """The command line of a candidates comparison (``--seeds``, ``--candidates``, ``--steps``, ``--eval-every``,
    ``--out``); :func:`parse_candidate_args` reads it."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=seeds)
    parser.add_argument("--candidates", nargs="+", default=list(candidates), choices=list(candidates))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--eval-every", type=int, default=eval_every)
    parser.add_argument("--out", type=Path, default=None, help="CSV, one row per run (resumes)")
    return parser


def parse_candidate_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, refuse the held-out report seeds (100 and above), and run torch on one thread."""
    args = parser.parse_args()
    if any(s >= 100 for s in args.seeds):
        parser.error("seeds >= 100 are held out for the report")
    th.set_num_threads(1)
    return args


def main() -> None:
    args = parse_candidate_args(candidates_parser(__doc__, CANDIDATES, [0, 1, 2], 200_000, 20_000))
    common = dict(group_size=4, gamma=0.95, lr=3e-4, n_epochs=10, batch_size=512, clip=0.2)
    run_candidates(
        args.out,
        {name: CANDIDATES[name] for name in args.candidates},
        args.seeds,
        lambda settings, seed: run(seed, steps=args.steps, eval_every=args.eval_every, **common, **settings),
        lambda curve: {"first_at_least_minus_200": next((s for s, r in curve if r >= -200), "")},
    )


def run_candidates(
    out: Path | None,
    candidates: dict[str, dict],
    seeds: list[int],
    train: Callable[[dict, int], list[tuple[int, float]]],
    extra: Callable[[list[tuple[int, float]]], dict] = lambda curve: {},
) -> None:
    """Train every candidate on every seed (``train(settings, seed)`` -> evaluation curve), one CSV row per run in
    ``out`` as it finishes (the runs already there are skipped, so a stopped comparison resumes)."""
    done = {(r["candidate"], int(r["seed"])) for r in read_rows(out)} if out is not None else set()
    for name, settings in candidates.items():
        for seed in seeds:
            if (name, seed) in done:
                continue
            start = time.perf_counter()
            curve = train(settings, seed)
            row = {
                "candidate": name,
                "settings": json.dumps(settings, sort_keys=True),
                "seed": seed,
                "final": round(float(curve[-1][1]), 1),
                **extra(curve),
                "curve": " ".join(f"{s // 1000}k:{r:.0f}" for s, r in curve),
                "wall_s": round(time.perf_counter() - start, 1),
            }
            print(row, flush=True)
            if out is not None:
                append_row(out, row, list(row))


if __name__ == "__main__":
    main()
