"""Independent probe: branched ("vine") groups against same-start groups for critic-free GRPO on MuJoCo (-v5).

The MuJoCo half of the critic-free issue's experiment (the Pendulum half is :mod:`benchmarks.probes.branched_groups`).
Nothing here imports pg-extras, SB3 or TorchRL: the envs are gymnasium's MuJoCo envs stepped through ``env.unwrapped``
(the time limit kept here), the state of a branch point is MuJoCo's ``qpos`` / ``qvel``, restored exactly with
``set_state`` (the whole state of these envs; checked against ``data.qpos`` / ``data.qvel`` when a branch starts), and
the policy and the PPO-clip update are written out below. The two schedules differ only in where a group starts:

- ``same_start``: ``groups`` groups of ``group_size`` episodes (up to 1000 steps, or until the env terminates), every
  member reset with its group's seed (MuJoCo's reset noise is seeded, so the members start from one state);
- ``branched``: ``trunks`` trunk episodes played by the current policy; every ``branch_every`` steps the trunk's state
  starts a group of ``group_size`` branches of up to ``branch_len`` steps. Trunk steps count against the budget but are
  not trained on.

In both, a step's advantage is its return-to-go within its episode or branch (0 after the env terminated) minus the
group's mean at the same step, standardised over the batch (the Pendulum recipe's ``return_to_go`` advantages). The
observations are standardised with running statistics of every collected step (frozen during an update), as SB3's
``VecNormalize(norm_reward=False)`` in our GRPO MuJoCo entry.

Usage (tuning seeds only)::

    python -m benchmarks.probes.branched_groups_mujoco --env HalfCheetah-v5 --seeds 0 1 \\
        --out docs/benchmarks/tuning/branched_groups_HalfCheetah-v5.csv
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch as th
from torch import nn

from benchmarks.probes.branched_groups import candidates_parser, parse_candidate_args, ppo_clip_update, run_candidates

MAX_STEPS = 1000  # the -v5 envs' time limit


class RunningNorm:
    """Running mean / variance of the observations (parallel Welford), applied as ``clip((x - mean) / std, +-10)``."""

    def __init__(self, dim: int) -> None:
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x: np.ndarray) -> None:
        mean, var, n = x.mean(0), x.var(0), len(x)
        delta, total = mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -10, 10).astype(np.float32)


class Policy(nn.Module):
    """Gaussian MLP 64-64 tanh (PyTorch's default initialisation), state-independent log-std (sigma = 1)."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.mu = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, act_dim))
        self.log_std = nn.Parameter(th.zeros(act_dim))

    def dist(self, obs: th.Tensor) -> th.distributions.Normal:
        return th.distributions.Normal(self.mu(obs), self.log_std.exp())


def play(policy: Policy, norm: RunningNorm, envs: list, obs: np.ndarray, limits: list[int]) -> dict:
    """Run every env from its current state (``obs``) until it terminates or has taken ``limits[i]`` steps, the policy
    batched over the envs still running. Returns raw observations, actions, log-probs, rewards (lists per env)."""
    n = len(envs)
    out = {k: [[] for _ in range(n)] for k in ("obs", "act", "logp", "rew")}
    alive = [limit > 0 for limit in limits]
    current = [o for o in obs]
    t = 0
    with th.no_grad():
        while any(alive):
            idx = [i for i in range(n) if alive[i]]
            raw = np.stack([current[i] for i in idx])
            dist = policy.dist(th.as_tensor(norm(raw)))
            action = dist.sample()
            logp = dist.log_prob(action).sum(-1)
            for j, i in enumerate(idx):
                a = action[j].numpy()
                low, high = envs[i].action_space.low, envs[i].action_space.high
                ob, reward, terminated, _, _ = envs[i].unwrapped.step(np.clip(a, low, high))
                for key, value in (("obs", raw[j]), ("act", a), ("logp", float(logp[j])), ("rew", reward)):
                    out[key][i].append(value)
                current[i] = ob
                if terminated or t + 1 >= limits[i]:
                    alive[i] = False
            t += 1
    return out


def advantages(rewards: list[list[float]], group_size: int, gamma: float) -> list[np.ndarray]:
    """Per member: return-to-go minus the group's mean return-to-go at the same step (0 after a member ended)."""
    rtg = []
    for r in rewards:
        out, running = np.zeros(len(r)), 0.0
        for t in reversed(range(len(r))):
            running = r[t] + gamma * running
            out[t] = running
        rtg.append(out)
    adv = []
    for g in range(0, len(rtg), group_size):
        members = rtg[g : g + group_size]
        length = max(len(m) for m in members)
        padded = np.stack([np.pad(m, (0, length - len(m))) for m in members])
        mean = padded.mean(0)
        adv += [m - mean[: len(m)] for m in members]
    return adv


def collect(policy, norm, envs, rng, schedule: str, kw: dict) -> tuple[list, int]:
    """One update's data: ``[(raw obs, actions, log-probs, advantages)]`` per episode / branch, and the env steps used."""
    g = kw["group_size"]
    if schedule == "same_start":
        n = kw["groups"] * g
        seeds = np.repeat(rng.integers(0, 2**31 - 1, size=kw["groups"]), g)
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs[:n], seeds, strict=True)])
        data = play(policy, norm, envs[:n], obs, [MAX_STEPS] * n)
        steps = sum(len(r) for r in data["rew"])
        adv = advantages(data["rew"], g, kw["gamma"])
        return [(data["obs"][i], data["act"][i], data["logp"][i], adv[i]) for i in range(n)], steps
    trunks = envs[: kw["trunks"]]
    obs = np.stack([env.reset(seed=int(rng.integers(0, 2**31 - 1)))[0] for env in trunks])
    # play the trunks step by step, keeping (t, qpos, qvel, obs) every branch_every steps
    points, steps = [], 0
    current, alive = list(obs), [True] * len(trunks)
    with th.no_grad():
        for t in range(MAX_STEPS):
            for i, env in enumerate(trunks):
                if alive[i] and t % kw["branch_every"] == 0:
                    points.append((t, env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy(), current[i].copy()))
            idx = [i for i in range(len(trunks)) if alive[i]]
            if not idx:
                break
            action = policy.dist(th.as_tensor(norm(np.stack([current[i] for i in idx])))).sample().numpy()
            for j, i in enumerate(idx):
                env = trunks[i]
                ob, _, terminated, _, _ = env.unwrapped.step(np.clip(action[j], env.action_space.low, env.action_space.high))
                current[i] = ob
                steps += 1
                alive[i] = not terminated
    episodes = []
    for start in range(0, len(points), max(1, len(envs) // g)):  # as many groups at once as there are envs
        chunk = points[start : start + len(envs) // g]
        branch_envs = envs[: len(chunk) * g]
        starts, limits = [], []
        for k, (t0, qpos, qvel, ob) in enumerate(chunk):
            for env in branch_envs[k * g : (k + 1) * g]:
                env.unwrapped.set_state(qpos, qvel)  # MujocoEnv's public setter of the whole state
                data = env.unwrapped.data
                assert np.array_equal(data.qpos, qpos) and np.array_equal(data.qvel, qvel), "state not restored"
                starts.append(ob)
                limits.append(min(kw["branch_len"], MAX_STEPS - t0))
        data = play(policy, norm, branch_envs, np.stack(starts), limits)
        steps += sum(len(r) for r in data["rew"])
        adv = advantages(data["rew"], g, kw["gamma"])
        episodes += [(data["obs"][i], data["act"][i], data["logp"][i], adv[i]) for i in range(len(branch_envs))]
    return episodes, steps


def evaluate(policy: Policy, norm: RunningNorm, env, seed: int, episodes: int = 5) -> float:
    """Mean return of deterministic episodes (the mean action) from seeded resets."""
    total = 0.0
    with th.no_grad():
        for k in range(episodes):
            ob, _ = env.reset(seed=seed + k)
            for _ in range(MAX_STEPS):
                a = policy.mu(th.as_tensor(norm(ob[None])))[0].numpy()
                ob, reward, terminated, _, _ = env.unwrapped.step(np.clip(a, env.action_space.low, env.action_space.high))
                total += reward
                if terminated:
                    break
    return total / episodes


def run(env_id: str, seed: int, schedule: str, steps: int, eval_every: int, **kw) -> list[tuple[int, float]]:
    """Train for ``steps`` env steps (trunk steps included); the deterministic evaluation curve."""
    th.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_envs = kw["groups"] * kw["group_size"] if schedule == "same_start" else kw["branch_envs"]
    envs = [gym.make(env_id) for _ in range(max(n_envs, kw.get("trunks", 0)))]
    eval_env = gym.make(env_id)
    obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
    policy, norm = Policy(obs_dim, act_dim), RunningNorm(obs_dim)
    optimizer = th.optim.Adam(policy.parameters(), lr=kw["lr"])
    done, curve, next_eval = 0, [], eval_every
    while done < steps:
        episodes, n = collect(policy, norm, envs, rng, schedule, kw)
        raw = np.concatenate([np.asarray(e[0]) for e in episodes])
        b_obs = th.as_tensor(norm(raw))  # the statistics the actions were drawn with
        norm.update(raw)
        b_act = th.as_tensor(np.concatenate([np.asarray(e[1]) for e in episodes]))
        b_logp = th.as_tensor(np.concatenate([np.asarray(e[2]) for e in episodes]), dtype=th.float32)
        adv = np.concatenate([e[3] for e in episodes])
        ppo_clip_update(policy, optimizer, b_obs, b_act, b_logp, adv, kw["n_epochs"], kw["batch_size"], kw["clip"])
        done += n
        while done >= next_eval:
            curve.append((next_eval, evaluate(policy, norm, eval_env, 10_000 + seed)))
            next_eval += eval_every
    curve.append((done, evaluate(policy, norm, eval_env, 10_000 + seed)))
    return curve


#: Same-start groups as our GRPO MuJoCo entry (groups of 8, lr 3e-4, 10 epochs, minibatch 512, gamma 0.99) and two
#: branched schedules with about as many env steps per update (HalfCheetah: 8k-16k).
CANDIDATES: dict[str, dict] = {
    "same_start": dict(schedule="same_start", groups=2),
    "branch100_len100": dict(schedule="branched", trunks=2, branch_every=100, branch_len=100, branch_envs=16),
    "branch200_len200": dict(schedule="branched", trunks=2, branch_every=200, branch_len=200, branch_envs=16),
}


def main() -> None:
    parser = candidates_parser(__doc__, CANDIDATES, [0, 1], 500_000, 100_000)
    parser.add_argument("--env", default="HalfCheetah-v5")
    args = parse_candidate_args(parser)
    common = dict(group_size=8, gamma=0.99, lr=3e-4, n_epochs=10, batch_size=512, clip=0.2)
    run_candidates(
        args.out,
        {name: CANDIDATES[name] for name in args.candidates},
        args.seeds,
        lambda settings, seed: run(args.env, seed, steps=args.steps, eval_every=args.eval_every, **common, **settings),
    )


if __name__ == "__main__":
    main()
