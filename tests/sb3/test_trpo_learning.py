"""sb3_pg_extras.TRPO learns: an identity env, and CartPole-v1 with the RL Zoo hyperparameters."""

from __future__ import annotations

import pytest
import torch as th
from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import IdentityEnv
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_pg_extras import TRPO

# rl-zoo3 hyperparams/trpo.yml, CartPole-v1 (also what benchmarks/trpo_update_speed.py uses)
ZOO_CARTPOLE = dict(
    n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99, learning_rate=1e-3, n_critic_updates=20
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


@pytest.mark.parametrize("estimator,budget", [("gae", 1536), ("mc", 3072), ("group", 3072)])
def test_solves_identity_env(estimator, budget):
    env = make_vec_env(lambda: IdentityEnv(4, ep_length=20), n_envs=4, seed=0)
    model = TRPO(
        "MlpPolicy",
        env,
        n_steps=64,
        batch_size=64,
        target_kl=0.05,
        n_critic_updates=5,
        seed=0,
        advantage_estimator=estimator,
        group_size=4,
        policy_kwargs=dict(net_arch=[32]),
    )
    model.learn(budget)
    mean_reward, _ = evaluate_policy(model, make_vec_env(lambda: IdentityEnv(4, ep_length=20), seed=1), n_eval_episodes=5)
    assert mean_reward >= 19.0  # random play scores 5


@pytest.mark.slow
def test_cartpole_reaches_195_with_zoo_hyperparameters():
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **ZOO_CARTPOLE)
    stop = StopTrainingOnRewardThreshold(reward_threshold=195, verbose=0)
    eval_callback = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=123), callback_on_new_best=stop, eval_freq=1024, n_eval_episodes=10
    )
    model.learn(30_720, callback=eval_callback)
    assert eval_callback.best_mean_reward >= 195, f"best mean eval return {eval_callback.best_mean_reward}"
    assert model.num_timesteps <= 20_480  # typically ~5k steps; sb3-contrib needs a similar number


def test_speed_benchmark_runs_and_writes_its_tables(tmp_path):
    from benchmarks import trpo_update_speed

    n_envs, config = trpo_update_speed.zoo_config("CartPole-v1")
    assert n_envs == 2 and config == ZOO_CARTPOLE  # the zoo file is what this test module and the benchmark use
    out = trpo_update_speed.main(["--steps", "1024", "--reps", "1", "--train-reps", "0", "--out", str(tmp_path / "speed")])
    assert out["ratio"] > 0 and (tmp_path / "speed.csv").exists() and "speed-up" in (tmp_path / "speed.md").read_text()
