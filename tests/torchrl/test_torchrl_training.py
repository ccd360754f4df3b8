"""Short end-to-end CartPole runs: Collector -> advantage module -> loss -> optimizer; the examples and their defaults."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import GymWrapper, RewardSum, TransformedEnv
from torchrl.modules import MLP, ProbabilisticActor, ValueOperator

from torchrl_pg_extras import GroupBatcher, GroupedEnv, GroupRelativeAdvantage, GRPOLoss, REINFORCELoss, TRPOLoss, TRPOStepper

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
NUM_ENVS = 16


def cartpole(seed: int, group_size: int | None = None):
    vec = gym.make_vec(
        "CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env = GymWrapper(vec, categorical_action_encoding=True)
    if group_size:
        env = GroupedEnv(env, group_size, seed=seed)
    env = TransformedEnv(env, RewardSum())
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


@pytest.mark.parametrize("replay_buffer", [False, True])
def test_trpo_stepper_under_a_trainer_learns_with_and_without_a_replay_buffer(replay_buffer):
    """Trainer(optimization_stepper=TRPOStepper) takes one trust-region step per collected batch, on the whole batch
    in time order; with ReplayBufferTrainer(flatten_tensordicts=True) the shuffled minibatches train the critic only."""
    from torchrl.data import LazyTensorStorage, SamplerWithoutReplacement, TensorDictReplayBuffer
    from torchrl.trainers import ReplayBufferTrainer, Trainer

    actor, critic = actor_critic(0)
    loss = TRPOLoss(actor, critic, max_kl=0.02)
    steps = []
    step = loss.trust_region_step
    loss.trust_region_step = lambda td: steps.append(step(td)) or steps[-1]  # count the steps, keep their results
    stepper = TRPOStepper(loss, torch.optim.Adam(loss.critic_parameters(), lr=3e-3), critic_updates=1)
    collector = Collector(cartpole(0), actor, frames_per_batch=1024, total_frames=8_192, auto_register_policy_transforms=False)
    trainer = Trainer(
        collector=collector,
        total_frames=8_192,
        frame_skip=1,
        optim_steps_per_batch=8 if replay_buffer else 4,
        loss_module=loss,
        optimization_stepper=stepper,
        progress_bar=False,
        logger=None,
        save_trainer_file=None,
    )
    if replay_buffer:
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(1024), sampler=SamplerWithoutReplacement())
        ReplayBufferTrainer(buffer, batch_size=128, flatten_tensordicts=True).register(trainer)
    returns = []
    trainer.register_op("batch_process", lambda batch: returns.extend(returns_of(batch)))
    trainer.train()
    collector.shutdown()
    assert len(steps) == 8  # one per collected batch, not one per minibatch
    assert sum(bool(s["accepted"]) for s in steps) >= 7
    assert_improves(returns, 50.0)


def test_grpo_learns_cartpole():
    actor, _ = actor_critic(0)
    loss = GRPOLoss(actor, clip_epsilon=0.2, kl_coeff=0.01)
    advantage = GroupRelativeAdvantage(group_size=4, mode="return_to_go")
    optim = torch.optim.Adam(loss.parameters(), lr=3e-3)
    collector = Collector(cartpole(0, group_size=4), actor, frames_per_batch=128, auto_register_policy_transforms=False)
    batcher = GroupBatcher(collector, groups_per_batch=2)
    returns = []
    for batch in batcher:
        returns += returns_of(batch)
        advantage(batch)
        for _ in range(4):
            optim.zero_grad()
            out = loss(batch)
            (out["loss_objective"] + out["loss_kl_to_ref"]).backward()
            optim.step()
        if batcher.env_steps >= 12_000:
            break
    collector.shutdown()
    assert_improves(returns, 45.0)


def _example(name: str):
    path = ROOT / "examples" / "torchrl" / f"{name}.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_example_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@pytest.mark.parametrize(
    ("script", "algo"),
    [("grpo_torchrl", "torchrl_grpo"), ("reinforce_torchrl", "torchrl_reinforce_pgx"), ("trpo_torchrl", "torchrl_trpo")],
)
def test_examples_default_to_the_tuned_settings_and_run(script, algo, tmp_path, monkeypatch, capsys):
    """The examples run torchrl_configs/'s entry for the env (the benchmark's settings), overridable by --flags and
    key=value."""
    from torchrl_pg_extras.configs import load_config

    sys.path.insert(0, str(ROOT))
    from benchmarks.torchrl_runner import DEFAULTS, OUR_CONFIGS

    module = _example(script)
    captured = {}
    monkeypatch.setattr("argparse.ArgumentParser.parse_args", _capture(captured))
    module.main(["--frames", "600", "--no-progress", "--logger", "none"])
    tuned = load_config(OUR_CONFIGS[algo], "CartPole-v1")
    assert tuned == {k: v for k, v in DEFAULTS[algo]["CartPole-v1"].items()}  # the benchmark runs the same
    args = vars(captured["args"])
    assert {k: args[k] for k in tuned if k != "frames"} == {k: v for k, v in tuned.items() if k != "frames"}
    assert args["frames"] == 600 and "env_steps=" in capsys.readouterr().out
    lr = "critic_lr" if algo == "torchrl_trpo" else "lr"
    module.main(["env=Pendulum-v1", "frames=600", f"{lr}=3e-4", "seed=3", "--no-progress", "--logger", "none"])
    args, pendulum = vars(captured["args"]), load_config(OUR_CONFIGS[algo], "Pendulum-v1")
    assert (args["env"], args[lr], args["seed"], args["gamma"]) == ("Pendulum-v1", 3e-4, 3, pendulum["gamma"])
    with pytest.raises(SystemExit):
        module.main([f"{lr}r=3"])
    assert f"did you mean {lr!r}" in capsys.readouterr().err


def _capture(store):
    import argparse

    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        store["args"] = original(self, args, namespace)
        return store["args"]

    return parse_args


def test_multiprocess_collector_example_runs(tmp_path, capsys):
    """The GRPO example with two collector processes (Collector(backend="process")), CSV logging."""
    argv = ["--frames", "600", "--num-envs", "4", "--group-size", "2", "--groups-per-batch", "2", "--backend", "process"]
    argv += ["--workers", "2", "--mp-start-method", "fork", "--no-progress", "--log-dir", str(tmp_path)]
    _example("grpo_torchrl").main(argv)
    assert "env_steps=" in capsys.readouterr().out
    logged = list(tmp_path.rglob("*.csv"))
    assert any("env_steps_per_s" in p.name for p in logged), logged
