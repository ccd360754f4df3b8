"""Independent probe: same-start GRPO on a numpy Pendulum, written from the paper with no RL framework.

The reference point of the critic-free issue: if this probe learns where ``sb3_pg_extras.GRPO`` does not, the fault is
ours, not the algorithm's. Nothing here imports pg-extras, SB3, TorchRL or gymnasium.

- env: gymnasium's Pendulum-v1 dynamics in numpy, vectorised over all members (200 steps, actions clipped to [-2, 2]
  by the env; the policy's log-prob is of the unclipped action);
- groups: ``group_size`` episodes from one random start; advantage at step t = return-to-go at t minus the group's mean
  return-to-go at t, then standardised over the batch;
- update: PPO-clip, ``n_epochs`` over shuffled mini-batches of steps, Adam, no gradient clipping;
- policy: Gaussian MLP 64-64 tanh (PyTorch's default initialisation), state-independent learnable log-std.

Usage::

    python -m benchmarks.probes.grpo_pendulum --seeds 0 1 2 --steps 200000
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch as th
from torch import nn


class VecPendulum:
    """gymnasium's Pendulum-v1 (g = 10), ``n`` copies in numpy; every copy runs exactly 200 steps."""

    max_steps = 200

    def __init__(self, n: int) -> None:
        self.n = n

    def reset(self, rng: np.random.Generator, group_size: int) -> np.ndarray:
        starts = rng.uniform([-math.pi, -1.0], [math.pi, 1.0], size=(self.n // group_size, 2))
        self.th, self.thdot = np.repeat(starts, group_size, axis=0).T.copy()
        return self.obs()

    def obs(self) -> np.ndarray:
        return np.stack([np.cos(self.th), np.sin(self.th), self.thdot], axis=1).astype(np.float32)

    def step(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.clip(u, -2.0, 2.0)
        norm_th = (self.th + math.pi) % (2 * math.pi) - math.pi
        reward = -(norm_th**2 + 0.1 * self.thdot**2 + 0.001 * u**2)
        self.thdot = np.clip(self.thdot + (3 * 10.0 / 2 * np.sin(self.th) + 3.0 * u) * 0.05, -8.0, 8.0)
        self.th = self.th + self.thdot * 0.05
        return self.obs(), reward


class Policy(nn.Module):
    def __init__(self, log_std: float) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
        self.log_std = nn.Parameter(th.full((1,), log_std))

    def dist(self, obs: th.Tensor) -> th.distributions.Normal:
        return th.distributions.Normal(self.mu(obs), self.log_std.exp())


def play(policy: Policy, env: VecPendulum, steps: int) -> tuple[list, list, list, np.ndarray]:
    """``steps`` steps of the sampling policy from the env's current state: observations, actions, log-probs (lists
    over time) and the rewards ``[steps, n]``."""
    obs_buf, act_buf, logp_buf, rew_buf = [], [], [], []
    obs = env.obs()
    with th.no_grad():
        for _ in range(steps):
            dist = policy.dist(th.as_tensor(obs))
            action = dist.sample()
            obs_buf.append(obs)
            act_buf.append(action)
            logp_buf.append(dist.log_prob(action).sum(-1))
            obs, reward = env.step(action.numpy()[:, 0])
            rew_buf.append(reward)
    return obs_buf, act_buf, logp_buf, np.stack(rew_buf)


def evaluate(policy: Policy, rng: np.random.Generator, episodes: int = 10) -> float:
    env = VecPendulum(episodes)
    obs, total = env.reset(rng, 1), np.zeros(episodes)
    with th.no_grad():
        for _ in range(env.max_steps):
            obs, reward = env.step(policy.mu(th.as_tensor(obs)).numpy()[:, 0])
            total += reward
    return float(total.mean())


def run(
    seed: int,
    steps: int,
    group_size: int,
    groups: int,
    gamma: float,
    lr: float,
    n_epochs: int,
    batch_size: int,
    clip: float,
    log_std: float,
    eval_every: int,
) -> list[tuple[int, float]]:
    th.manual_seed(seed)
    rng, eval_rng = np.random.default_rng(seed), np.random.default_rng(seed + 10_000)
    policy = Policy(log_std)
    optimizer = th.optim.Adam(policy.parameters(), lr=lr)
    n, T = group_size * groups, VecPendulum.max_steps
    env, done_steps, curve, next_eval = VecPendulum(n), 0, [], eval_every
    while done_steps < steps:
        env.reset(rng, group_size)
        obs_buf, act_buf, logp_buf, rewards = play(policy, env, T)  # rewards: [T, n]
        rtg = np.zeros_like(rewards)
        running = np.zeros(n)
        for t in reversed(range(T)):
            running = rewards[t] + gamma * running
            rtg[t] = running
        grouped = rtg.reshape(T, groups, group_size)
        adv = (grouped - grouped.mean(axis=2, keepdims=True)).reshape(T, n)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        b_obs = th.as_tensor(np.stack(obs_buf)).reshape(T * n, 3)
        b_act, b_logp = th.stack(act_buf).reshape(T * n, 1), th.stack(logp_buf).reshape(T * n)
        b_adv = th.as_tensor(adv, dtype=th.float32).reshape(T * n)
        for _ in range(n_epochs):
            for idx in th.randperm(T * n).split(batch_size):
                ratio = (policy.dist(b_obs[idx]).log_prob(b_act[idx]).sum(-1) - b_logp[idx]).exp()
                loss = -th.min(ratio * b_adv[idx], ratio.clamp(1 - clip, 1 + clip) * b_adv[idx]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        done_steps += T * n
        while done_steps >= next_eval:
            curve.append((next_eval, evaluate(policy, eval_rng)))
            next_eval += eval_every
    curve.append((done_steps, evaluate(policy, eval_rng)))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--groups", type=int, default=8, help="groups per update")
    parser.add_argument("--gamma", type=float, default=0.95)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--n-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--clip", type=float, default=0.2)
    parser.add_argument("--log-std", type=float, default=math.log(2.0))
    parser.add_argument("--eval-every", type=int, default=20_000)
    args = parser.parse_args()
    if any(s >= 100 for s in args.seeds):
        parser.error("seeds >= 100 are held out for the report")
    th.set_num_threads(1)
    for seed in args.seeds:
        start = time.perf_counter()
        kw = {k: v for k, v in vars(args).items() if k != "seeds"}
        curve = run(seed, **kw)
        first = next((s for s, r in curve if r >= -200), None)
        print(
            f"seed {seed}: final {curve[-1][1]:.0f} at {curve[-1][0]}, first >= -200 at {first}, "
            f"{time.perf_counter() - start:.0f} s; curve " + " ".join(f"{s // 1000}k:{r:.0f}" for s, r in curve)
        )


if __name__ == "__main__":
    main()
