"""Short end-to-end CartPole runs: Collector -> advantage module -> loss -> optimizer; and a multi-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import GymWrapper, RewardSum, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, ValueOperator

from torchrl_pg_extras import GroupBatcher, GroupRelativeAdvantage, GroupReset, GRPOLoss, REINFORCELoss, TRPOLoss, TRPOStepper

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
NUM_ENVS = 16


def cartpole(seed: int, group_size: int | None = None):
    vec = gym.make_vec(
        "CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env = TransformedEnv(GymWrapper(vec, categorical_action_encoding=True), RewardSum())
    if group_size:
        env.append_transform(GroupReset(group_size, seed=seed))
    env.set_seed(seed)
    return env


def actor_critic(seed: int):
    torch.manual_seed(seed)
    actor = ProbabilisticActor(
        TensorDictModule(MLP(in_features=4, out_features=2, num_cells=[32]), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )
    critic = ValueOperator(
        MLP(in_features=4, out_features=1, num_cells=[32], activation_class=nn.Tanh), in_keys=["observation"]
    )
    return actor, critic


def returns_of(batch) -> list[float]:
    done = batch["next", "done"].squeeze(-1)
    mask = batch.get(("collector", "mask"), default=None)
    if mask is not None:
        done = done & mask
    return batch["next", "episode_reward"].squeeze(-1)[done].tolist()


def assert_improves(returns: list[float], min_final: float) -> None:
    first, last = returns[:32], returns[-32:]
    before, after = sum(first) / len(first), sum(last) / len(last)
    print(f"returns {before:.1f} -> {after:.1f} over {len(returns)} episodes")
    assert after > max(2.0 * before, min_final), (before, after)


def run(batches, update, max_frames: int) -> list[float]:
    returns, frames = [], 0
    for batch in batches:
        returns += returns_of(batch)
        update(batch)
        mask = batch.get(("collector", "mask"), default=None)
        frames += int(mask.sum()) if mask is not None else batch.numel()
        if frames >= max_frames:
            break
    return returns


def test_reinforce_learns_cartpole():
    actor, _ = actor_critic(0)
    loss = REINFORCELoss(actor, gamma=0.99, normalize_advantage=True)
    optim = torch.optim.Adam(loss.parameters(), lr=2e-2)
    collector = Collector(
        cartpole(0),
        actor,
        frames_per_batch=256,
        trajs_per_batch=32,
        traj_format="padded",
        auto_register_policy_transforms=False,
    )

    def update(batch):
        optim.zero_grad()
        loss(batch)["loss_actor"].backward()
        optim.step()

    returns = run(collector, update, 15_000)
    collector.shutdown()
    assert_improves(returns, 50.0)


def test_trpo_learns_cartpole():
    actor, critic = actor_critic(0)
    loss = TRPOLoss(actor, critic, max_kl=0.02)
    stepper = TRPOStepper(loss, torch.optim.Adam(loss.critic_parameters(), lr=3e-3), critic_updates=5, critic_batch_size=256)
    collector = Collector(cartpole(0), actor, frames_per_batch=1024, auto_register_policy_transforms=False)
    accepted = []
    returns = run(collector, lambda batch: accepted.append(bool(stepper.step(None, batch)["accepted"])), 8_000)
    collector.shutdown()
    assert sum(accepted) >= len(accepted) - 1
    assert_improves(returns, 50.0)


def test_grpo_learns_cartpole():
    actor, _ = actor_critic(0)
    loss = GRPOLoss(actor, clip_epsilon=0.2, kl_coeff=0.01)
    advantage = GroupRelativeAdvantage(group_size=4)
    optim = torch.optim.Adam(loss.parameters(), lr=3e-2)
    collector = Collector(
        cartpole(0, group_size=4),
        actor,
        frames_per_batch=256,
        trajs_per_batch=4,
        traj_format="padded",
        auto_register_policy_transforms=False,
    )

    def update(batch):
        advantage(batch)
        optim.zero_grad()
        out = loss(batch)
        (out["loss_objective"] + out["loss_kl_to_ref"]).backward()
        optim.step()

    returns = run(GroupBatcher(collector, group_size=4, groups_per_batch=8), update, 16_000)
    collector.shutdown()
    assert_improves(returns, 45.0)


def test_multiprocess_collector_example_runs(tmp_path):
    """The GRPO example with two collector processes (Collector(backend="process")), CSV logging."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable,
        str(ROOT / "examples" / "torchrl" / "grpo_torchrl.py"),
        "--frames",
        "1500",
        "--num-envs",
        "4",
        "--group-size",
        "2",
        "--groups-per-batch",
        "2",
        "--multiprocess",
        "2",
        "--mp-start-method",
        "fork",
        "--no-progress",
        "--log-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frames=" in proc.stdout
    logged = list(tmp_path.rglob("*.csv"))
    assert any(p.name.startswith("train") or "episode_return" in p.name for p in logged), logged
