"""REINFORCE and REINFORCEWithBaseline as SB3 algorithms (style of SB3's own test-suite)."""

from __future__ import annotations

import doctest
import importlib
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_helpers import capture_training_batches
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize

from pg_extras import returns_to_go
from sb3_pg_extras import REINFORCE, REINFORCEWithBaseline

ALGOS = [REINFORCE, REINFORCEWithBaseline]
SPACE_ENVS = {
    "Discrete": lambda: IdentityEnv(3, ep_length=8),
    "Box": lambda: IdentityEnvBox(ep_length=8),
    "MultiDiscrete": lambda: IdentityEnvMultiDiscrete(3, ep_length=8),
    "MultiBinary": lambda: IdentityEnvMultiBinary(3, ep_length=8),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(threads)


def flat_params(model) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in model.policy.parameters()])


class RewardedImageEnv(FakeImageEnv):
    """SB3's FakeImageEnv (10-step episodes of noise images) with reward 1 per step."""

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, 1.0, terminated, truncated, info


class ScriptedEpisodes(gym.Env):
    """Deterministic episodes of scripted lengths; obs = (env id, episode index, step), reward depends on both.

    Episode k ends after ``lengths[k % len(lengths)]`` steps, terminated if k is even, truncated (time limit) if odd.
    """

    observation_space = spaces.Box(-1e6, 1e6, (3,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, env_id: int, lengths: list[int]) -> None:
        self.env_id, self.lengths, self.k, self.t = env_id, lengths, -1, 0

    @staticmethod
    def reward(env_id: int, k: int, t: int) -> float:
        return 1.0 + 0.25 * t + 0.5 * k + 0.125 * env_id

    def _obs(self):
        return np.array([self.env_id, self.k, self.t], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.k, self.t = self.k + 1, 0
        return self._obs(), {}

    def step(self, action):
        r = self.reward(self.env_id, self.k, self.t)
        self.t += 1
        end = self.t >= self.lengths[self.k % len(self.lengths)]
        terminated, truncated = end and self.k % 2 == 0, end and self.k % 2 == 1
        return self._obs(), r, terminated, truncated, {}


def scripted_vec_env(schedules):
    return DummyVecEnv([lambda i=i, s=s: ScriptedEpisodes(i, s) for i, s in enumerate(schedules)])


# ---------------------------------------------------------------------------------------------------------- basics
@pytest.mark.parametrize(
    "module",
    ["sb3_pg_extras.reinforce.algo", "sb3_pg_extras.reinforce_baseline.algo", "sb3_pg_extras.reinforce_baseline.policies"],
)
def test_docstring_examples(module):
    assert doctest.testmod(importlib.import_module(module)).failed == 0


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("space", sorted(SPACE_ENVS))
def test_learn_every_action_space(algo, space):
    env = make_vec_env(SPACE_ENVS[space], n_envs=2, seed=0)
    model = algo("MlpPolicy", env, n_steps=12, batch_size=7, seed=0)
    before = flat_params(model)
    model.learn(48)
    assert model._n_updates == 2
    assert model.logger.name_to_value["train/n_episodes"] > 0
    assert not th.allclose(before, flat_params(model))
    action, _ = model.predict(env.observation_space.sample()[None], deterministic=True)
    assert env.action_space.contains(action[0].astype(env.action_space.dtype))


def test_reinforce_has_no_value_parameters():
    model = REINFORCE("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=dict(pi=[16], vf=[32])))
    names = [name for name, _ in model.policy.named_parameters()]
    assert names and not any("value" in n for n in names)
    assert model.policy.value_net is None
    baseline = REINFORCEWithBaseline("MlpPolicy", "CartPole-v1")
    assert any("value" in n for n, _ in baseline.policy.named_parameters())


@pytest.mark.parametrize("algo", ALGOS)
def test_dict_and_image_observations(algo):
    dict_env = gym.wrappers.TimeLimit(SimpleMultiObsEnv(random_start=False), max_episode_steps=12)
    model = algo("MultiInputPolicy", dict_env, n_steps=12, seed=0).learn(24)
    assert model._n_updates == 2 and model.logger.name_to_value["train/n_episodes"] == 1
    image_env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)
    kwargs = dict(features_extractor_kwargs=dict(features_dim=8))
    model = algo("CnnPolicy", image_env, n_steps=10, batch_size=4, seed=0, policy_kwargs=kwargs)
    model.learn(20)
    assert model._n_updates == 2


@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_same_run(algo):
    def run():
        env = make_vec_env(lambda: IdentityEnvBox(ep_length=8), n_envs=2, seed=3)
        model = algo("MlpPolicy", env, n_steps=16, seed=3)
        return flat_params(model.learn(96))

    assert th.equal(run(), run())


@pytest.mark.parametrize("algo", ALGOS)
def test_save_load(algo, tmp_path):
    def env():
        return make_vec_env(lambda: IdentityEnvMultiDiscrete(3, ep_length=8), n_envs=2, seed=1)

    model = algo("MlpPolicy", env(), n_steps=12, learning_rate=lambda p: 3e-3 * p, seed=1)
    model.learn(72)
    obs = np.stack([env().observation_space.sample() for _ in range(5)])
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = algo.load(path, env=env(), device="cpu")
    assert th.equal(flat_params(model), flat_params(loaded))
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.policy.optimizer.state_dict()["state"].keys() == model.policy.optimizer.state_dict()["state"].keys()
    if algo is REINFORCEWithBaseline:
        assert loaded.policy.vf_optimizer.state_dict()["state"]
    # identical continued training from the same seed
    for m in (model, loaded):
        m.set_env(env())
        m.set_random_seed(7)
        m.learn(48)
    assert th.equal(flat_params(model), flat_params(loaded))
    # custom_objects, get/set_parameters
    other = algo.load(path, custom_objects={"learning_rate": 0.0, "n_steps": 6}, env=env())
    assert other.n_steps == 6 and other.learning_rate == 0.0
    other.set_parameters(model.get_parameters())
    assert th.equal(flat_params(model), flat_params(other))


# ---------------------------------------------------------------------------------------------------------- the maths
@pytest.mark.parametrize("carry_over", [True, False])
def test_update_uses_core_returns_of_complete_episodes_only(carry_over):
    gamma, n_steps = 0.9, 5
    schedules = [[3, 7, 2], [6, 4], [12]]  # env 2's episodes are longer than a rollout
    env = scripted_vec_env(schedules)
    model = REINFORCE("MlpPolicy", env, n_steps=n_steps, gamma=gamma, normalize_returns=False, carry_over=carry_over, seed=0)
    seen = []
    step = model._policy_gradient_step

    def spy(batch, weights, parameters=None):
        seen.append((batch.observations.numpy().copy(), weights.numpy().copy(), model.num_timesteps // len(schedules)))
        return step(batch, weights, parameters)

    model._policy_gradient_step = spy
    total_rollouts = 6
    model.learn(n_steps * len(schedules) * total_rollouts)

    # Expected G of every step of every episode, from the core's returns_to_go on each scripted episode.
    expected = {}
    horizon = n_steps * total_rollouts
    for env_id, lengths in enumerate(schedules):
        start, k = 0, 0
        while True:
            length = lengths[k % len(lengths)]
            if start + length > horizon:
                break
            r = th.tensor([ScriptedEpisodes.reward(env_id, k, t) for t in range(length)])
            done = th.zeros(length, dtype=th.bool)
            done[-1] = True
            term, trunc = (done, None) if k % 2 == 0 else (th.zeros_like(done), done)
            g = returns_to_go(r, term, trunc, gamma=gamma)
            for t in range(length):
                expected[(env_id, k, t)] = (float(g[t]), start + t, start + length - 1)
            start, k = start + length, k + 1

    used = []
    for obs, weights, rollout_end in seen:
        for o, w in zip(obs, weights, strict=True):
            key = (int(o[0]), int(o[1]), int(o[2]))
            assert key in expected, f"step {key} of an unfinished episode was used"
            g, global_t, last_t = expected[key]
            assert w == pytest.approx(g, rel=1e-5)
            assert last_t < rollout_end  # its episode had ended when it was used
            if not carry_over:  # strictly on-policy: the whole episode lies in the current rollout
                first_t = global_t - key[2]
                assert first_t >= rollout_end - n_steps
            used.append(key)
    assert len(used) == len(set(used)), "a step was used twice"
    if carry_over:  # every episode that ended before the last rollout's end was used, whole
        assert set(used) == set(expected)
    else:
        assert set(used) < set(expected)
    # a hand-computed value, independent of the core: env 0, episode 0 (3 steps, terminated), t=0
    assert expected[(0, 0, 0)][0] == pytest.approx(1.0 + 0.9 * 1.25 + 0.81 * 1.5)


def test_truncation_bootstrap_of_baseline():
    env = scripted_vec_env([[3]])
    model = REINFORCEWithBaseline("MlpPolicy", env, n_steps=6, gamma=0.5, bootstrap_truncated=True, seed=0)
    seen = capture_training_batches(model)
    model.learn(6)
    ((batch, estimate),) = seen
    # episode 1 is truncated after 3 steps: its last G is r + gamma * V(s_final) with the stored value
    row = int(th.nonzero(batch.truncated)[0])
    assert batch.next_values[row] != 0.0
    assert estimate.returns[row] == pytest.approx(float(batch.rewards[row] + 0.5 * batch.next_values[row]), rel=1e-5)
    term_row = int(th.nonzero(batch.terminated)[0])
    assert estimate.returns[term_row] == pytest.approx(float(batch.rewards[term_row]))


def test_baseline_critic_loss_decreases_and_steps_are_separate():
    image_env = RewardedImageEnv(screen_height=36, screen_width=36, n_channels=1)
    image_env.observation_space.seed(0)  # FakeImageEnv's noise images come from its observation space
    kwargs = dict(features_extractor_kwargs=dict(features_dim=8))  # shared CNN features extractor
    model = REINFORCEWithBaseline(
        "CnnPolicy", image_env, n_steps=40, n_critic_updates=4, vf_learning_rate=3e-2, seed=0, policy_kwargs=kwargs
    )
    seen = capture_training_batches(model)
    model.learn(40)  # one rollout, one update
    policy = model.policy
    actor, critic = policy.actor_parameters(), policy.critic_parameters()
    assert {id(p) for p in actor}.isdisjoint({id(p) for p in critic})
    assert len(actor) + len(critic) == len(list(policy.parameters()))
    ((batch, estimate),) = seen
    returns = estimate.returns

    def critic_mse():
        with th.no_grad():
            return th.nn.functional.mse_loss(policy.critic_values(batch.observations), returns).item()

    losses = [critic_mse()]
    for _ in range(10):
        actor_before = [p.detach().clone() for p in actor]
        critic_before = [p.detach().clone() for p in critic]
        model.policy.optimizer.step = lambda *a, **k: None  # freeze the actor step: the critic step alone
        model._episode_batch = batch
        model.train()
        assert all(th.equal(a, b) for a, b in zip(actor_before, actor, strict=True)), "a critic step moved an actor parameter"
        assert not all(th.equal(a, b) for a, b in zip(critic_before, critic, strict=True))
        losses.append(critic_mse())
    # noise images say nothing of the step, so the MSE floor is the variance of the returns (about 8): strictly
    # decreasing while far above it, then within reach of it
    assert all(b < a for a, b in itertools.pairwise(losses[:6])), losses
    assert losses[-1] < 0.5 * losses[0] and min(losses) < 1.5 * float(returns.var(unbiased=False)), losses
    assert model.logger.name_to_value["train/value_loss"] > 0
    del model.policy.optimizer.step
    # and the actor step does not move the critic
    critic_before = [p.detach().clone() for p in critic]
    model._policy_gradient_step(batch, returns, policy.actor_parameters)
    assert all(th.equal(a, b) for a, b in zip(critic_before, critic, strict=True))


# ---------------------------------------------------------------------------------------------------------- SB3 features
def test_callbacks_progress_bar_tensorboard_vecnormalize(tmp_path):
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=1), training=False)
    model = REINFORCEWithBaseline("MlpPolicy", env, n_steps=64, tensorboard_log=str(tmp_path / "tb"), verbose=1, seed=0)
    callbacks = [
        EvalCallback(eval_env, eval_freq=64, n_eval_episodes=2, log_path=str(tmp_path / "eval")),
        CheckpointCallback(save_freq=64, save_path=str(tmp_path / "ckpt")),
    ]
    model.learn(256, callback=callbacks, progress_bar=True)
    assert list((tmp_path / "tb").glob("REINFORCEWithBaseline_1/events.*"))
    assert len(list((tmp_path / "ckpt").glob("*.zip"))) == 2
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    for key in ("train/policy_gradient_loss", "train/entropy_loss", "train/value_loss", "train/explained_variance"):
        assert key in model.logger.name_to_value


def test_subproc_and_frame_stack():
    env = VecFrameStack(SubprocVecEnv([lambda: IdentityEnvBox(ep_length=8)] * 2, start_method="fork"), n_stack=2)
    model = REINFORCE("MlpPolicy", env, n_steps=16, seed=0)
    model.learn(64)
    assert model._n_updates == 2 and model.logger.name_to_value["train/n_episodes"] == 4
    env.close()


def test_continuing_learn_keeps_unfinished_episodes():
    env = scripted_vec_env([[7]])
    model = REINFORCE("MlpPolicy", env, n_steps=5, normalize_returns=False, seed=0)
    seen = capture_training_batches(model)
    with pytest.warns(RuntimeWarning, match="no episode both started and ended"):
        model.learn(5)
    assert not seen and model.rollout_buffer.num_pending_steps == 5
    model.learn(5, reset_num_timesteps=False)  # the 7-step episode finishes in the second call
    ((batch, _),) = seen
    assert batch.lengths.tolist() == [7] and model.rollout_buffer.num_pending_steps == 3
    with pytest.warns(RuntimeWarning):
        model.learn(5)  # reset_num_timesteps=True resets the env: the unfinished tail is dropped
    assert len(seen) == 1 and model.rollout_buffer.num_pending_steps == 5


# ---------------------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("algo", ALGOS)
def test_identity_learning(algo):
    env = make_vec_env(lambda: IdentityEnv(4, ep_length=10), n_envs=4, seed=0)
    model = algo("MlpPolicy", env, n_steps=20, learning_rate=1e-2, gamma=0.5, seed=0)
    model.learn(4_000)
    mean, _ = evaluate_policy(model, Monitor(IdentityEnv(4, ep_length=10)), n_eval_episodes=10, deterministic=True)
    assert mean >= 9.0


@pytest.mark.parametrize(
    "algo, kwargs",
    [
        (REINFORCE, dict(learning_rate=1e-2)),
        (REINFORCEWithBaseline, dict(learning_rate=1e-2, vf_learning_rate=3e-3, batch_size=256)),
    ],
)
def test_cartpole_learning(algo, kwargs):
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = algo("MlpPolicy", env, n_steps=256, seed=0, **kwargs)
    model.learn(22_528)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=5, seed=100), n_eval_episodes=10, deterministic=True)
    assert mean >= 195


# ---------------------------------------------------------------------------------------------------------- bad input
class TupleActionEnv(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_steps=0), "n_steps must be an integer >= 1"),
        (dict(n_steps=2.5), "n_steps"),
        (dict(gamma=1.5), r"gamma must be a finite number in \[0, 1\]"),
        (dict(gamma="0.99"), "gamma.*without quotes"),
        (dict(ent_coef=-0.1), "ent_coef must be a finite number >= 0"),
        (dict(max_grad_norm=-1.0), "max_grad_norm must be a finite number > 0"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(batch_size=0), "batch_size"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(carry_over="yes"), "carry_over"),
    ],
)
@pytest.mark.parametrize("algo", ALGOS)
def test_bad_arguments(algo, kwargs, match):
    with pytest.raises(ValueError, match=match):
        algo("MlpPolicy", "CartPole-v1", **kwargs)


def test_bad_estimator_arguments():
    with pytest.raises(ValueError, match="advantage_estimator='gae'"):
        REINFORCE("MlpPolicy", "CartPole-v1", advantage_estimator="gae")
    with pytest.raises(ValueError, match="group_size=None is invalid"):
        REINFORCE("MlpPolicy", "CartPole-v1", advantage_estimator="group")
    with pytest.raises(ValueError, match="group_size=1 is invalid"):
        REINFORCE("MlpPolicy", "CartPole-v1", advantage_estimator="group", group_size=1)


@pytest.mark.parametrize(
    "kwargs, match", [(dict(n_critic_updates=0), "n_critic_updates"), (dict(vf_learning_rate=-1.0), "vf_learning_rate")]
)
def test_bad_baseline_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        REINFORCEWithBaseline("MlpPolicy", "CartPole-v1", **kwargs)


@pytest.mark.parametrize("algo", ALGOS)
def test_unsupported_action_space(algo):
    with pytest.raises(ValueError, match="action space"):
        algo("MlpPolicy", DummyVecEnv([TupleActionEnv]))


def test_no_complete_episode_warns_and_endless_episode_errors():
    env = scripted_vec_env([[1000]])
    model = REINFORCE("MlpPolicy", env, n_steps=4, max_episode_steps=10, seed=0)
    with pytest.warns(RuntimeWarning, match="no episode both started and ended"):
        model.learn(8)
    with pytest.raises(RuntimeError, match=r"max_episode_steps=10.*TimeLimit"):
        model.learn(40, reset_num_timesteps=False)


def test_critic_policy_rejected_by_reinforce():
    from sb3_pg_extras.reinforce_baseline import BaselinePolicy

    with pytest.raises(ValueError, match="critic-free"):
        REINFORCE(BaselinePolicy, "CartPole-v1")
