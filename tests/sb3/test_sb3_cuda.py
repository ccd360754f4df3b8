"""The SB3 algorithms on a CUDA device: a few updates each, save on GPU and load on CPU and back (skipped without GPU)."""

from __future__ import annotations

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_pg_extras import GRPO, REINFORCE, TRPO, REINFORCEWithBaseline

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU"),
]

ALGOS = {
    "GRPO": lambda env, device: GRPO("MlpPolicy", env, group_size=2, n_steps=32, device=device, seed=0),
    "GRPO-lockstep": lambda env, device: GRPO("MlpPolicy", env, group_size=2, n_steps=32, group_schedule="lockstep",
                                              device=device, seed=0),
    "REINFORCE": lambda env, device: REINFORCE("MlpPolicy", env, n_steps=64, device=device, seed=0),
    "REINFORCE-group": lambda env, device: REINFORCE("MlpPolicy", env, n_steps=64, advantage_estimator="group",
                                                     group_size=2, device=device, seed=0),
    "REINFORCEWithBaseline": lambda env, device: REINFORCEWithBaseline("MlpPolicy", env, n_steps=64, device=device, seed=0),
    "TRPO": lambda env, device: TRPO("MlpPolicy", env, n_steps=64, batch_size=32, device=device, seed=0),
    "TRPO-mc": lambda env, device: TRPO("MlpPolicy", env, n_steps=64, batch_size=32, advantage_estimator="mc",
                                        device=device, seed=0),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ALGOS))
def test_train_on_gpu_save_load_on_cpu_and_back(name, tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = ALGOS[name](env, "cuda")
    model.learn(512)
    assert model.device.type == "cuda"
    assert all(p.device.type == "cuda" and th.isfinite(p).all() for p in model.policy.parameters())
    obs = env.reset()
    action_gpu, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    cpu = type(model).load(tmp_path / "model.zip", device="cpu")
    assert all(p.device.type == "cpu" for p in cpu.policy.parameters())
    action_cpu, _ = cpu.predict(obs, deterministic=True)
    assert (action_cpu == action_gpu).all()
    cpu.save(tmp_path / "cpu.zip")
    back = type(model).load(tmp_path / "cpu.zip", device="cuda", env=env)
    back.learn(128, reset_num_timesteps=False)
    assert all(p.device.type == "cuda" for p in back.policy.parameters())
