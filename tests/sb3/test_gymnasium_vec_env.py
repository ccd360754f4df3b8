"""GymnasiumVecEnv: SB3's VecEnv semantics over a gymnasium VectorEnv (same transitions as a DummyVecEnv of Monitors)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_pg_extras import GRPO, TRPO, GymnasiumVecEnv

SAME_STEP = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}


def _vector(env_id: str, n: int, **kwargs) -> GymnasiumVecEnv:
    return GymnasiumVecEnv(gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", vector_kwargs=SAME_STEP, **kwargs))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_same_transitions_as_a_dummy_vec_env(env_id):
    # Pendulum ends only by its time limit (shortened): TimeLimit.truncated and terminal_observation; CartPole terminates
    ours = _vector(env_id, 3, max_episode_steps=25)
    sb3 = make_vec_env(lambda: gym.make(env_id, max_episode_steps=25), n_envs=3)
    for env in (ours, sb3):
        env.seed(7)
        env.action_space.seed(0)
    obs_a, obs_b = ours.reset(), sb3.reset()
    np.testing.assert_array_equal(obs_a, obs_b)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(120):
        actions = np.stack([sb3.action_space.sample() for _ in range(3)])
        if env_id == "CartPole-v1":
            actions = rng.integers(0, 2, 3)
        a, b = ours.step(actions), sb3.step(actions)
        for x, y in zip(a[:3], b[:3], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6)
        for info_a, info_b, done in zip(a[3], b[3], a[2], strict=True):
            if done:
                ended += 1
                np.testing.assert_allclose(info_a["terminal_observation"], info_b["terminal_observation"], rtol=1e-6)
                assert info_a["TimeLimit.truncated"] == info_b["TimeLimit.truncated"]
                assert info_a["episode"]["l"] == info_b["episode"]["l"]
                assert info_a["episode"]["r"] == pytest.approx(info_b["episode"]["r"], rel=1e-5)
    assert ended >= 6


def test_next_step_autoreset_is_refused_with_the_fix():
    vec = gym.make_vec("CartPole-v1", num_envs=4, vectorization_mode="vector_entry_point")  # CartPoleVectorEnv: NEXT_STEP
    with pytest.raises(ValueError, match="SAME_STEP"):
        GymnasiumVecEnv(vec)
    with pytest.raises(TypeError, match="VectorEnv"):
        GymnasiumVecEnv(gym.make("CartPole-v1"))


@pytest.mark.parametrize(
    "make",
    [
        lambda env: PPO("MlpPolicy", env, n_steps=32, batch_size=64, seed=0),
        lambda env: TRPO("MlpPolicy", env, n_steps=32, batch_size=64, n_critic_updates=1, seed=0),
        lambda env: GRPO("MlpPolicy", env, n_steps=32, group_size=2, seed=0),
    ],
)
def test_sb3_algorithms_train_and_evaluate_on_it(make):
    env = _vector("CartPole-v1", 4)
    model = make(env)
    model.learn(512)
    assert model.num_timesteps >= 512 and len(model.ep_info_buffer) > 0  # the episode infos reached SB3's buffer
    mean, _ = evaluate_policy(model, _vector("CartPole-v1", 2), n_eval_episodes=4, warn=True)
    assert mean > 0
