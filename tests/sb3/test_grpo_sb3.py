"""SB3 GRPO: API, synchronised group resets, group advantages, save/load, determinism, bad input."""

from __future__ import annotations

import doctest
import importlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
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
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize

from pg_extras import group_relative_advantages
from sb3_pg_extras import GRPO
from sb3_pg_extras.common.group_env import GroupSync
from sb3_pg_extras.grpo.buffers import GroupRolloutBuffer

th.set_num_threads(1)

# fork: starting sub-processes by fork takes milliseconds (forkserver/spawn re-import torch in each one)
SUBPROC_KWARGS = {SubprocVecEnv: dict(start_method="fork")}
SMALL = dict(n_steps=1, batch_size=64, n_epochs=2, policy_kwargs=dict(net_arch=[16]))


class LengthEnv(gym.Env):
    """Deterministic env: the episode ends when the agent plays action 1 or after ``max_len`` steps; reward ``t`` at step t.

    The start observation is drawn from ``np_random``, so equal seeds give equal starts.
    """

    def __init__(self, max_len: int = 6, reward: float | None = None, fixed_length: bool = False):
        self.observation_space = spaces.Box(-1, 1, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.max_len, self.reward, self.fixed_length = max_len, reward, fixed_length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.obs = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        self.t += 1
        reward = float(self.t) if self.reward is None else self.reward
        terminated = int(action) == 1 and not self.fixed_length
        truncated = self.t >= self.max_len
        return self.obs * 0.5, reward, terminated, truncated and not terminated, {}


def length_env(n_envs: int = 4, **kwargs) -> DummyVecEnv:
    return make_vec_env(LengthEnv, n_envs=n_envs, env_kwargs=kwargs)


class CaptureWriter(KVWriter):
    def __init__(self):
        self.records: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.records.append(dict(key_values))


def capture_logger(model: GRPO) -> CaptureWriter:
    writer = CaptureWriter()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    return writer


def params_equal(a: th.nn.Module, b: th.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(th.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- docstrings


@pytest.mark.parametrize(
    "name",
    ["sb3_pg_extras.common.group_env", "sb3_pg_extras.grpo.buffers", "sb3_pg_extras.grpo.policies", "sb3_pg_extras.grpo.algo"],
)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------- spaces and policies


@pytest.mark.parametrize(
    "env_fn",
    [
        lambda: IdentityEnv(dim=3, ep_length=4),
        lambda: IdentityEnvBox(ep_length=4),
        lambda: IdentityEnvMultiDiscrete(dim=3, ep_length=4),
        lambda: IdentityEnvMultiBinary(dim=3, ep_length=4),
    ],
    ids=["Discrete", "Box", "MultiDiscrete", "MultiBinary"],
)
def test_every_action_space_learns_briefly(env_fn):
    model = GRPO("MlpPolicy", make_vec_env(env_fn, n_envs=4), group_size=2, seed=0, **SMALL)
    model.learn(100)
    assert model.num_timesteps >= 100
    buf = model.rollout_buffer
    assert buf.n_episodes == 4 and buf.lengths.tolist() == [4, 4, 4, 4]
    assert buf.actions.shape[0] == 16 and th.isfinite(buf.advantages).all()
    obs = model.get_env().reset()
    action, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(action[0])


def test_multi_input_and_cnn_policies():
    model = GRPO("MultiInputPolicy", make_vec_env(SimpleMultiObsEnv, n_envs=2), group_size=2, seed=0, **SMALL)
    model.learn(50)
    env = make_vec_env(lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), n_envs=2)
    model = GRPO("CnnPolicy", env, group_size=2, seed=0, n_steps=1, n_epochs=1, batch_size=None)
    model.learn(20)
    assert model.rollout_buffer.observations.dtype == th.uint8  # images kept raw, the policy normalises them


def test_no_value_head_and_reference_is_frozen_copy():
    model = GRPO("MlpPolicy", length_env(), group_size=2, seed=0)
    for policy in (model.policy, model.ref_policy):
        assert policy.value_net is None
        assert not any("value" in name for name, _ in policy.named_parameters())
    assert params_equal(model.policy, model.ref_policy)
    assert not any(p.requires_grad for p in model.ref_policy.parameters())
    optim_params = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert optim_params == {id(p) for p in model.policy.parameters()}
    assert not optim_params & {id(p) for p in model.ref_policy.parameters()}


# ----------------------------------------------------------------------------- group resets


def _assert_groups_share_start(obs: np.ndarray, group_size: int) -> None:
    groups = obs.reshape(-1, group_size, *obs.shape[1:])
    for g in groups:
        np.testing.assert_array_equal(g, np.broadcast_to(g[0], g.shape))
    firsts = groups[:, 0].reshape(groups.shape[0], -1)
    assert len({row.tobytes() for row in firsts}) == groups.shape[0], "different groups should start differently"


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
def test_group_members_reset_from_same_state(vec_env_cls):
    env = make_vec_env("CartPole-v1", n_envs=6, vec_env_cls=vec_env_cls, vec_env_kwargs=SUBPROC_KWARGS.get(vec_env_cls))
    try:
        sync = GroupSync(6, 3, seed=1)
        first = sync.reset(env)
        _assert_groups_share_start(first, 3)
        # Play until every env has ended; waiting envs report no done, no reward, no episode info.
        rng = np.random.default_rng(0)
        ended = np.zeros(6, dtype=bool)
        while True:
            _, rewards, dones, infos = env.step(rng.integers(0, 2, 6))
            waiting_before = ended.copy()
            step = sync.filter_step(rewards, dones, infos)
            np.testing.assert_array_equal(step.active, ~waiting_before)
            assert not step.dones[waiting_before].any() and (step.rewards[waiting_before] == 0).all()
            assert all("episode" not in step.infos[i] for i in np.nonzero(waiting_before)[0])
            ended |= step.dones
            if step.round_end:
                break
        assert ended.all()
        second = sync.reset(env)
        _assert_groups_share_start(second, 3)
        assert not np.array_equal(first, second)
        # Same generator seed -> same group seeds.
        sync.seed(1)
        np.testing.assert_array_equal(sync.reset(env), first)
    finally:
        env.close()


def test_rollout_episodes_of_a_group_share_their_first_observation():
    env = make_vec_env("CartPole-v1", n_envs=4, vec_env_cls=SubprocVecEnv, vec_env_kwargs=SUBPROC_KWARGS[SubprocVecEnv])
    model = GRPO("MlpPolicy", env, group_size=2, seed=3, **SMALL)
    model.learn(300)
    buf = model.rollout_buffer
    firsts = buf.observations[buf.offsets].numpy()
    for group in th.unique(buf.episode_group):
        rows = firsts[(buf.episode_group == group).numpy()]
        assert rows.shape[0] == 2
        np.testing.assert_array_equal(rows[0], rows[1])
    env.close()


def test_waiting_steps_are_not_trained_on():
    model = GRPO("MlpPolicy", length_env(4, max_len=6), group_size=2, seed=0, **SMALL)
    model.learn(1)  # one rollout of one round
    buf = model.rollout_buffer
    episode_lengths = sorted(info["l"] for info in model.ep_info_buffer)
    # Only the group episodes' steps are stored for training; Monitor saw exactly those episodes.
    assert sorted(buf.lengths.tolist()) == episode_lengths
    assert buf.n_episodes == 4 and buf.old_log_prob.numel() == sum(episode_lengths)
    assert buf.size == max(episode_lengths)  # the round lasted as long as its longest episode
    # Rewards of the training episodes are those of LengthEnv (1, 2, ..., l): no waiting step slipped in.
    for e in range(buf.n_episodes):
        length = int(buf.lengths[e])
        np.testing.assert_allclose(buf.episode_rewards[e, :length].numpy(), np.arange(1, length + 1))


def test_n_steps_is_a_minimum_and_rollouts_hold_whole_rounds():
    model = GRPO("MlpPolicy", length_env(4, max_len=6), group_size=2, seed=0, **{**SMALL, "n_steps": 10})
    model.learn(1)
    buf = model.rollout_buffer
    n_rounds = sum(buf._round_end)
    assert buf.size >= 10 and buf._round_end[-1] and n_rounds >= 2
    assert buf.n_episodes == 4 * n_rounds and sorted(th.unique(buf.episode_round).tolist()) == list(range(n_rounds))
    assert model.num_timesteps == 4 * buf.size  # every env step counts, waiting ones included


def test_gsde_on_box_actions():
    model = GRPO(
        "MlpPolicy",
        make_vec_env(lambda: IdentityEnvBox(ep_length=4), n_envs=2),
        group_size=2,
        seed=0,
        use_sde=True,
        sde_sample_freq=2,
        **SMALL,
    )
    model.learn(40)
    assert model.policy.use_sde and th.isfinite(model.policy.log_std).all()


# ----------------------------------------------------------------------------- advantages and mini-batches


def _hand_made_buffer() -> GroupRolloutBuffer:
    """N=4 envs, G=2, two rounds. Round 0 lengths (2, 1 | 3, 3), round 1 lengths (1, 2 | 2, 1)."""
    rewards = [
        # round 0 (3 steps)
        [1.0, 5.0, 1.0, 2.0],
        [2.0, 9.0, 1.0, 2.0],  # env 1 waits (reward 9 must be ignored)
        [9.0, 9.0, 1.0, 3.0],
        # round 1 (2 steps)
        [4.0, 1.0, 0.0, 7.0],
        [9.0, 3.0, 2.0, 9.0],
    ]
    active = [[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]
    dones = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1], [1, 0, 0, 1], [0, 1, 1, 0]]
    buf = GroupRolloutBuffer(spaces.Box(-10, 10, (1,)), spaces.Discrete(2), n_envs=4, group_size=2)
    for t in range(5):
        act = np.array(active[t], dtype=bool)
        buf.add(
            np.full((4, 1), t, np.float32),
            np.zeros(4, np.int64),
            np.where(act, rewards[t], 9.0),
            act,
            np.array(dones[t], dtype=bool),
            np.zeros(4),
            round_end=t in (2, 4),
        )
    return buf


HAND_EPISODES = [  # (round, env, rewards)
    (0, 0, [1.0, 2.0]), (0, 1, [5.0]), (0, 2, [1.0, 1.0, 1.0]), (0, 3, [2.0, 2.0, 3.0]),
    (1, 0, [4.0]), (1, 1, [1.0, 3.0]), (1, 2, [0.0, 2.0]), (1, 3, [7.0]),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["outcome", "process", "return_to_go"])
@pytest.mark.parametrize("scale,rloo", [("group", False), ("batch", False), ("none", True)])
def test_buffer_advantages_equal_core_on_hand_made_rollout(mode, scale, rloo):
    buf = _hand_made_buffer()
    stats = buf.compute_advantages(mode=mode, scale=scale, rloo=rloo, gamma=0.9)
    # Reference: the same episodes laid out by hand, one group per (round, env // 2).
    rewards = th.zeros(8, 3)
    mask = th.zeros(8, 3, dtype=th.bool)
    for e, (_, _, r) in enumerate(HAND_EPISODES):
        rewards[e, : len(r)] = th.tensor(r)
        mask[e, : len(r)] = True
    group_ids = th.tensor([2 * rnd + env // 2 for rnd, env, _ in HAND_EPISODES])
    ref = group_relative_advantages(rewards, mask, group_ids=group_ids, mode=mode, scale=scale, rloo=rloo, gamma=0.9)
    # Buffer episodes are ordered env by env, then by time: map them to the hand-made order.
    order = sorted(range(8), key=lambda e: (HAND_EPISODES[e][1], HAND_EPISODES[e][0]))
    expected = th.cat([ref.advantages[e, mask[e]] for e in order])
    th.testing.assert_close(buf.advantages, expected)
    assert buf.lengths.tolist() == [len(HAND_EPISODES[e][2]) for e in order]
    assert stats.n_episodes == 8 and stats.n_groups == 4 and stats.n_active_steps == 15 and stats.n_env_steps == 20
    # Observations follow the episodes: the stored obs is the time step of the round.
    assert buf.observations[:, 0].tolist() == [0, 1, 3, 0, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3]


def test_outcome_advantages_by_hand():
    buf = _hand_made_buffer()
    stats = buf.compute_advantages(mode="outcome", scale="group", rloo=False, gamma=1.0)
    a = 1 / np.sqrt(2)  # two members with different returns: +-1/sqrt(2) (unbiased std)
    expected = [
        -a, -a, 0.0,  # env 0: round 0 return 3 < 5; round 1 return 4 == 4 (tie -> 0)
        a, 0.0, 0.0,  # env 1: round 0 return 5 > 3; round 1 tie
        -a, -a, -a, -a, -a,  # env 2: round 0 return 3 < 7; round 1 return 2 < 7
        a, a, a, a,  # env 3
    ]  # fmt: skip
    np.testing.assert_allclose(buf.advantages.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert stats.frac_zero_std_groups == 0.25


def test_minibatches_hold_whole_episodes_once():
    buf = _hand_made_buffer()
    buf.compute_advantages()
    for batch_size in (None, 1, 4, 6, 100):
        seen = []
        for batch in buf.get(batch_size):
            # Every episode of the mini-batch is whole: positions 0..l-1, mask matches.
            lengths = batch.mask.sum(1)
            for e in range(batch.n_episodes):
                positions = batch.position[batch.episode == e]
                assert positions.tolist() == list(range(int(lengths[e])))
            seen += batch.observations[:, 0].tolist()
            if batch_size is not None and batch_size <= 4:
                assert batch.mask.sum() >= batch_size / 2
        assert sorted(seen) == sorted(buf.observations[:, 0].tolist())
    assert len(list(buf.get(1))) == 8 and len(list(buf.get(None))) == 1


def test_loss_aggregation_on_a_mini_batch():
    buf = _hand_made_buffer()
    buf.compute_advantages()
    (batch,) = list(buf.get(None))
    x = batch.to_episodes(batch.advantages.clone().requires_grad_())
    assert x.shape == (8, 3) and batch.mask.sum() == 15
    np.testing.assert_array_equal(batch.mask.sum(1).sort().values.numpy(), sorted(buf.lengths.tolist()))


# ----------------------------------------------------------------------------- SB3 API


def test_same_seed_gives_identical_runs():
    def run(seed):
        model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), group_size=2, seed=seed, **SMALL)
        model.learn(400)
        return model

    a, b, c = run(5), run(5), run(6)
    assert params_equal(a.policy, b.policy)
    assert th.equal(a.rollout_buffer.advantages, b.rollout_buffer.advantages)
    assert not params_equal(a.policy, c.policy)


def test_save_load_predict_continue_and_reference(tmp_path):
    env_kwargs = dict(n_steps=1, batch_size=32, n_epochs=2, group_size=2, beta=0.1, policy_kwargs=dict(net_arch=[16]))
    model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), seed=0, **env_kwargs)
    model.learn(300)
    # ref_update_interval=None: the reference is still the initial policy, which training moved away from.
    assert not params_equal(model.policy, model.ref_policy)
    model.save(tmp_path / "grpo")
    obs = np.random.default_rng(0).uniform(-0.1, 0.1, (10, 4)).astype(np.float32)

    loaded = GRPO.load(
        tmp_path / "grpo", env=make_vec_env("CartPole-v1", n_envs=4), device="cpu", custom_objects=dict(learning_rate=1e-3)
    )
    assert loaded.learning_rate == 1e-3 and loaded.group_size == 2 and loaded.beta == 0.1
    assert params_equal(model.policy, loaded.policy) and params_equal(model.ref_policy, loaded.ref_policy)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    no_env = GRPO.load(tmp_path / "grpo")
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], no_env.predict(obs, deterministic=True)[0])

    # Continued training from the same seed is identical for the original and two loaded copies.
    copies = [
        model,
        GRPO.load(tmp_path / "grpo", env=make_vec_env("CartPole-v1", n_envs=4)),
        GRPO.load(tmp_path / "grpo", env=make_vec_env("CartPole-v1", n_envs=4)),
    ]
    for m in copies:
        m.set_random_seed(11)
        m.learn(200, reset_num_timesteps=True)
    assert params_equal(copies[0].policy, copies[1].policy) and params_equal(copies[1].policy, copies[2].policy)
    assert params_equal(copies[1].ref_policy, loaded.ref_policy)  # still the initial policy

    # get_parameters / set_parameters round-trip the reference too.
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer", "ref_policy"}
    fresh = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), seed=1, **env_kwargs)
    fresh.set_parameters(params)
    assert params_equal(fresh.policy, model.policy) and params_equal(fresh.ref_policy, model.ref_policy)
    fresh.set_parameters(str(tmp_path / "grpo.zip"))
    assert params_equal(fresh.ref_policy, loaded.ref_policy)


def test_reference_update_interval():
    model = GRPO("MlpPolicy", length_env(), group_size=2, seed=0, ref_update_interval=1, beta=0.5, **SMALL)
    model.learn(40)
    assert model._n_grad_steps > 0 and params_equal(model.policy, model.ref_policy)


def test_kl_penalty_pulls_policy_back_to_reference():
    # Constant reward and fixed length: every group is tied, advantages are 0, only beta * KL(pi || pi_ref) acts.
    env = make_vec_env(LengthEnv, n_envs=4, env_kwargs=dict(max_len=3, reward=1.0, fixed_length=True))
    model = GRPO(
        "MlpPolicy",
        env,
        group_size=2,
        seed=0,
        beta=1.0,
        learning_rate=3e-3,
        n_steps=16,
        n_epochs=5,
        batch_size=None,
        max_grad_norm=None,
        policy_kwargs=dict(net_arch=[16]),
    )
    with th.no_grad():
        model.policy.action_net.bias[0] += 2.0  # move the policy away from the reference
    writer = capture_logger(model)
    model.learn(2000)
    kl = [r["train/kl_ref"] for r in writer.records if "train/kl_ref" in r]
    assert all(r["rollout/frac_zero_std_groups"] == 1.0 for r in writer.records if "rollout/frac_zero_std_groups" in r)
    assert kl[0] > 0.01 and kl[-1] < 0.2 * kl[0]


def test_logs_sb3_and_grpo_keys():
    model = GRPO("MlpPolicy", length_env(), group_size=2, seed=0, clip_range_high=0.28, **SMALL)
    writer = capture_logger(model)
    model.learn(60)
    keys = set().union(*writer.records)
    expected = {
        "train/policy_gradient_loss", "train/approx_kl", "train/entropy_loss", "train/clip_fraction", "train/learning_rate",
        "train/clip_range", "train/clip_range_high", "train/n_updates", "train/loss", "train/kl_ref",
        "train/frac_zero_std_groups", "rollout/group_return_std", "rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps",
    }  # fmt: skip
    assert expected <= keys
    assert not any("value" in k or "explained_variance" in k for k in keys)


def test_schedules_and_string_env():
    model = GRPO(
        "MlpPolicy",
        "CartPole-v1",
        group_size=2,
        n_envs=4,
        seed=0,
        learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
        clip_range=lambda progress: 0.3 * progress,  # RL Zoo's lin_0.3
        **SMALL,
    )
    assert model.n_envs == 4
    writer = capture_logger(model)
    model.learn(1000)
    clip = [r["train/clip_range"] for r in writer.records if "train/clip_range" in r]
    lr = [r["train/learning_rate"] for r in writer.records if "train/learning_rate" in r]
    assert clip[0] > clip[-1] > 0 and lr[0] > lr[-1]
    # Whole rounds overshoot total_timesteps; the progress stays in [0, 1], so schedules never go negative.
    assert model.num_timesteps > 1000 and model._current_progress_remaining == 0.0
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.0


def test_callbacks_progress_bar_tensorboard_and_vec_wrappers(tmp_path):
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=4))
    model = GRPO("MlpPolicy", env, group_size=2, seed=0, tensorboard_log=str(tmp_path / "tb"), verbose=0, **SMALL)
    eval_env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1), training=False)
    callbacks = [
        EvalCallback(eval_env, eval_freq=50, n_eval_episodes=2, log_path=str(tmp_path / "eval"), warn=False),
        CheckpointCallback(save_freq=50, save_path=str(tmp_path / "ckpt"), name_prefix="grpo"),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm/rich experimental warnings
        model.learn(400, callback=callbacks, progress_bar=True)
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    assert list((tmp_path / "ckpt").glob("grpo_*_steps.zip"))
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert model.get_vec_normalize_env() is env and env.obs_rms.count > 1
    # Normalised observations of a group's members are equal at the start of a round.
    _assert_groups_share_start(model._group_sync.reset(env), 2)

    stacked = VecFrameStack(make_vec_env("CartPole-v1", n_envs=4), n_stack=3)
    model = GRPO("MlpPolicy", stacked, group_size=2, seed=0, **SMALL)
    model.learn(100)
    assert model.rollout_buffer.observations.shape[1] == 12
    _assert_groups_share_start(model._group_sync.reset(stacked), 2)


def test_set_env_and_continue_learning():
    model = GRPO("MlpPolicy", length_env(4), group_size=2, seed=0, **SMALL)
    model.learn(30)
    model.set_env(length_env(4), force_reset=False)
    model.learn(30, reset_num_timesteps=False)
    assert model.num_timesteps >= 60
    with pytest.raises(AssertionError, match="number of environments"):
        model.set_env(length_env(6))


def test_target_kl_stops_epochs_early():
    model = GRPO(
        "MlpPolicy",
        length_env(),
        group_size=2,
        seed=0,
        target_kl=1e-6,
        learning_rate=0.05,
        n_epochs=10,
        n_steps=8,
        batch_size=4,
        policy_kwargs=dict(net_arch=[16]),
    )
    model.learn(1)
    assert model._n_updates < 10


def test_process_mode_warns_without_signal():
    model = GRPO("MlpPolicy", "CartPole-v1", group_size=4, seed=0, advantage_mode="process", **SMALL)
    with pytest.warns(UserWarning, match="process supervision has no signal"):
        model.learn(100)


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_loss_aggregation_modes_train(aggregation):
    model = GRPO("MlpPolicy", length_env(), group_size=2, seed=0, loss_aggregation=aggregation, **SMALL)
    before = [p.clone() for p in model.policy.parameters()]
    model.learn(40)
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(group_size=3), "group_size=3 does not divide"),
        (dict(group_size=1), "group_size must be an integer >= 2"),
        (dict(clip_range=-0.1), "clip_range must be a positive"),
        (dict(clip_range_high=-0.1), "clip_range_high must be a positive"),
        (dict(clip_range=lambda _: -1.0), "clip_range schedule must return values >= 0"),
        (dict(beta=-0.01), "beta must be >= 0"),
        (dict(advantage_mode="value"), "Unknown advantage_mode='value'"),
        (dict(advantage_scale="std"), "Unknown advantage_scale='std'"),
        (dict(loss_aggregation="sum"), "Unknown loss_aggregation='sum'"),
        (dict(n_envs=8), "n_envs=8 but the given VecEnv has 4 envs"),
        (dict(n_steps=0), "n_steps must be an integer >= 1"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(ref_update_interval=0), "ref_update_interval must be an integer >= 1"),
        (dict(target_kl=0.0), "target_kl must be > 0"),
        (dict(gamma=1.5), "gamma must be in"),
        (dict(policy="ActorCriticPolicy"), "Unknown policy='ActorCriticPolicy'"),
    ],
)
def test_bad_input_raises_at_construction(kwargs, match):
    kwargs = dict(kwargs)
    policy = kwargs.pop("policy", "MlpPolicy")
    with pytest.raises(ValueError, match=match):
        GRPO(policy, length_env(4), **{"group_size": 2, **kwargs})


def test_bad_policy_class_and_action_space():
    from stable_baselines3.common.policies import ActorCriticPolicy

    with pytest.raises(ValueError, match="critic-free"):
        GRPO(ActorCriticPolicy, length_env(4), group_size=2)

    class TupleActions(LengthEnv):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)])

    with pytest.raises(ValueError, match="does not support the action space"):
        GRPO("MlpPolicy", DummyVecEnv([TupleActions, TupleActions]), group_size=2)
