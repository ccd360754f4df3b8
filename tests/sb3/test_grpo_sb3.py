"""SB3 GRPO: API on every VecEnv, group resets, group advantages, save/load, determinism, bad input."""

from __future__ import annotations

import doctest
import importlib
import warnings

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
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecNormalize

from pg_extras import group_relative_advantages
from sb3_pg_extras import GRPO

th.set_num_threads(1)

# fork: starting sub-processes by fork takes milliseconds (forkserver/spawn re-import torch in each one)
SUBPROC_KWARGS = {SubprocVecEnv: dict(start_method="fork")}
SMALL = dict(n_steps=16, batch_size=64, n_epochs=2, policy_kwargs=dict(net_arch=[16]))


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
    ["sb3_pg_extras.common.group_env", "sb3_pg_extras.grpo.policies", "sb3_pg_extras.grpo.algo"],
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
    seen = capture_training_batches(model)
    model.learn(128)
    assert model.num_timesteps == 128
    batch, estimate = seen[0]
    assert batch.lengths.tolist() == [4] * 16  # one rollout: 16 steps of 4 envs, 4-step episodes, whole groups
    assert batch.actions.shape[0] == 64 and th.isfinite(estimate.advantages).all()
    obs = model.get_env().reset()
    action, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(action[0])


def test_multi_input_and_cnn_policies():
    model = GRPO("MultiInputPolicy", make_vec_env(SimpleMultiObsEnv, n_envs=2), group_size=2, seed=0, **SMALL)
    model.learn(50)
    env = make_vec_env(lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1), n_envs=2)
    model = GRPO("CnnPolicy", env, group_size=2, seed=0, n_steps=10, n_epochs=1, batch_size=None)
    seen = capture_training_batches(model)
    model.learn(60)
    assert seen and seen[0][0].observations.dtype == th.uint8  # images kept raw, the policy normalises them


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


def _first_observations(batch) -> dict[int, list[np.ndarray]]:
    """{group: first observation of each of its episodes}."""
    offsets = (th.cumsum(batch.lengths, 0) - batch.lengths).tolist()
    out: dict[int, list[np.ndarray]] = {}
    obs = batch.observations.numpy()
    for start in offsets:
        out.setdefault(int(batch.group[start]), []).append(obs[start])
    return out


@pytest.mark.parametrize("vec_env_cls", [DummyVecEnv, SubprocVecEnv])
@pytest.mark.parametrize("n_envs", [1, 3])
def test_members_of_a_group_start_from_the_same_state(vec_env_cls, n_envs):
    from sb3_pg_extras import GroupResetWrapper

    env = make_vec_env(
        "CartPole-v1",
        n_envs=n_envs,
        vec_env_cls=vec_env_cls,
        vec_env_kwargs=SUBPROC_KWARGS.get(vec_env_cls),
        wrapper_class=GroupResetWrapper if vec_env_cls is SubprocVecEnv else None,
    )
    model = GRPO("MlpPolicy", env, group_size=4, seed=3, **{**SMALL, "n_steps": 64})
    writer = capture_logger(model)
    seen = capture_training_batches(model)
    model.learn(64 * 8)
    env.close()
    groups = {}
    for batch, _ in seen:
        for group, firsts in _first_observations(batch).items():
            assert len(firsts) == 4  # whole groups only
            for f in firsts[1:]:
                np.testing.assert_array_equal(f, firsts[0])
            groups[group] = firsts[0].tobytes()
    assert len(groups) >= 3 and len(set(groups.values())) == len(groups), "different groups start differently"
    fractions = [r["rollout/active_step_fraction"] for r in writer.records if "rollout/active_step_fraction" in r]
    assert fractions and min(fractions) == 1.0  # asynchronous groups: no env ever waits


def test_members_in_different_spawned_processes_start_from_the_same_state():
    from sb3_pg_extras import GroupResetWrapper

    env = make_vec_env("CartPole-v1", n_envs=2, vec_env_cls=SubprocVecEnv, wrapper_class=GroupResetWrapper,
                       vec_env_kwargs=dict(start_method="spawn"))  # fmt: skip
    model = GRPO("MlpPolicy", env, group_size=2, seed=1, **SMALL)
    seen = capture_training_batches(model)
    model.learn(256)
    env.close()
    n_groups = 0
    for batch, _ in seen:
        for firsts in _first_observations(batch).values():
            np.testing.assert_array_equal(firsts[0], firsts[1])
            n_groups += 1
    assert n_groups >= 2


def test_lockstep_schedule_masks_waiting_steps():
    model = GRPO("MlpPolicy", length_env(4, max_len=6), group_size=2, seed=0, group_schedule="lockstep", **SMALL)
    model.n_steps = 12
    model._setup_model()
    writer = capture_logger(model)
    seen = capture_training_batches(model)
    model.learn(48)
    (batch, _estimate), *_ = seen
    # Monitor saw exactly the group episodes (the waiting envs' own episode ends are hidden): 4 per round
    assert 0 < len(model.ep_info_buffer) <= model._slots.scheduler._next_episode  # one per episode handed out
    lengths = batch.lengths.tolist()
    offsets = np.cumsum([0, *lengths])
    rewards = batch.rewards.numpy()
    for e, length in enumerate(lengths):  # LengthEnv's rewards are 1, 2, ..., l: no waiting step slipped in
        np.testing.assert_allclose(rewards[offsets[e] : offsets[e + 1]], np.arange(1, length + 1))
    fractions = [r["rollout/active_step_fraction"] for r in writer.records if "rollout/active_step_fraction" in r]
    assert fractions and max(fractions) < 1.0


def test_rollouts_are_n_steps_per_env_and_groups_carry_over():
    env = make_vec_env(lambda: LengthEnv(max_len=6, fixed_length=True), n_envs=3)
    model = GRPO("MlpPolicy", env, group_size=8, seed=0, **{**SMALL, "n_steps": 4})
    seen = capture_training_batches(model)
    model.learn(3 * 4 * 6)
    assert model.num_timesteps == 72  # exactly n_steps * n_envs per rollout, as SB3
    # 3 envs play 6-step episodes: 8 members take 16 steps per env, so groups complete across rollouts
    assert seen and all(b.lengths.tolist() == [6] * 8 * (b.lengths.numel() // 8) for b, _ in seen)
    assert sum(b.lengths.numel() for b, _ in seen) == 8 * (72 // 48)


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


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("mode", ["outcome", "process", "return_to_go"])
@pytest.mark.parametrize("scale,rloo", [("group", False), ("batch", False), ("none", True)])
def test_advantages_equal_core_on_the_trained_episodes(mode, scale, rloo):
    env = make_vec_env(lambda: LengthEnv(max_len=5), n_envs=3)
    model = GRPO(
        "MlpPolicy", env, group_size=2, seed=0, advantage_mode=mode, advantage_scale=scale, rloo=rloo, gamma=0.9, **SMALL
    )
    model.n_steps = 8
    model._setup_model()
    seen = capture_training_batches(model)
    model.learn(48)
    batch, estimate = seen[0]
    # Reference: the episodes laid out by hand ([E, L] + mask), one label per episode.
    lengths = batch.lengths.tolist()
    offsets = np.cumsum([0, *lengths])
    rewards = th.zeros(len(lengths), max(lengths))
    mask = th.zeros_like(rewards, dtype=th.bool)
    for e, length in enumerate(lengths):
        rewards[e, :length] = batch.rewards[offsets[e] : offsets[e + 1]]
        mask[e, :length] = True
    group_ids = batch.group[offsets[:-1]]
    assert th.equal(th.unique(group_ids, return_counts=True)[1], th.full((len(lengths) // 2,), 2))
    ref = group_relative_advantages(rewards, mask, group_ids=group_ids, mode=mode, scale=scale, rloo=rloo, gamma=0.9)
    th.testing.assert_close(estimate.advantages, ref.advantages[mask])


def test_outcome_advantages_by_hand():
    env = DummyVecEnv([lambda: LengthEnv(max_len=2, fixed_length=True), lambda: LengthEnv(max_len=3, fixed_length=True)])
    model = GRPO("MlpPolicy", env, group_size=2, seed=0, **{**SMALL, "n_steps": 6})
    seen = capture_training_batches(model)
    model.learn(12)
    batch, estimate = seen[0]
    a = 1 / np.sqrt(2)  # two members with different returns (1+2=3 vs 1+2+3=6): -+1/sqrt(2) (unbiased std)
    by_group: dict[int, list[float]] = {}
    for g, adv, length in zip(
        batch.group[th.cumsum(batch.lengths, 0) - 1].tolist(),
        estimate.advantages[th.cumsum(batch.lengths, 0) - 1].tolist(),
        batch.lengths.tolist(),
        strict=True,
    ):
        by_group.setdefault(g, []).append((length, adv))
    pairs = [sorted(v) for v in by_group.values() if len({length for length, _ in v}) == 2]
    assert pairs
    for (short, a_short), (long, a_long) in pairs:
        assert (short, long) == (2, 3)
        assert a_short == pytest.approx(-a, rel=1e-5) and a_long == pytest.approx(a, rel=1e-5)


# ----------------------------------------------------------------------------- SB3 API


def test_same_seed_gives_identical_runs():
    def run(seed):
        model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4), group_size=2, seed=seed, **SMALL)
        model.seen = capture_training_batches(model)
        model.learn(400)
        return model

    a, b, c = run(5), run(5), run(6)
    assert params_equal(a.policy, b.policy)
    assert all(th.equal(x[1].advantages, y[1].advantages) for x, y in zip(a.seen, b.seen, strict=True))
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
    model.learn(200)
    keys = set().union(*writer.records)
    expected = {
        "train/policy_gradient_loss", "train/approx_kl", "train/entropy_loss", "train/clip_fraction", "train/learning_rate",
        "train/clip_range", "train/clip_range_high", "train/n_updates", "train/loss", "train/kl_ref",
        "rollout/frac_zero_std_groups", "rollout/group_return_std", "rollout/active_step_fraction",
        "rollout/group_policy_lag", "rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps",
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
    # The last rollout overshoots total_timesteps; the progress stays in [0, 1], so schedules never go negative.
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

    stacked = VecFrameStack(make_vec_env("CartPole-v1", n_envs=4), n_stack=3)
    model = GRPO("MlpPolicy", stacked, group_size=2, seed=0, **SMALL)
    seen = capture_training_batches(model)
    model.learn(200)
    assert seen and seen[0][0].observations.shape[1] == 12
    for batch, _ in seen:  # the stacked first observations of a group's members are equal
        for firsts in _first_observations(batch).values():
            assert len(firsts) == 2
            np.testing.assert_array_equal(firsts[0], firsts[1])


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
        (dict(group_size=1), "group_size=1 is invalid: group_size must be an integer >= 2"),
        (dict(group_size="8"), "group_size.*without quotes"),
        (dict(clip_range=-0.1), "clip_range must be a finite number > 0"),
        (dict(clip_range_high=-0.1), "clip_range_high must be a finite number > 0"),
        (dict(clip_range=lambda _: -1.0), r"clip_range\(1.0\)=-1.0 is invalid"),
        (dict(beta=-0.01), "beta must be a finite number >= 0"),
        (dict(beta="0.1"), "beta.*without quotes"),
        (dict(rloo="no"), "rloo"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(group_schedule="rounds"), "Unknown group_schedule='rounds'"),
        (dict(max_policy_lag=-1), "max_policy_lag"),
        (dict(advantage_mode="value"), "Unknown advantage_mode='value'"),
        (dict(advantage_scale="std"), "Unknown advantage_scale='std'"),
        (dict(loss_aggregation="sum"), "Unknown loss_aggregation='sum'"),
        (dict(n_envs=8), "n_envs=8 but the given VecEnv has 4 envs"),
        (dict(n_steps=0), "n_steps must be an integer >= 1"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(ref_update_interval=0), "ref_update_interval must be an integer >= 1"),
        (dict(target_kl=0.0), "target_kl must be a finite number > 0"),
        (dict(target_kl=float("inf")), "target_kl"),
        (dict(gamma=1.5), r"gamma must be a finite number in \[0, 1\]"),
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


# ----------------------------------------------------------------------------- every SB3 pattern A2C handles


class Float64BoxActions(IdentityEnvBox):
    def __init__(self):
        super().__init__(ep_length=5)
        self.action_space = spaces.Box(-1, 1, (1,), np.float64)


def _api_cases():
    from stable_baselines3.common.vec_env import VecTransposeImage

    image = lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)  # noqa: E731
    transposed = lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=3, channel_first=False)  # noqa: E731
    return {
        "string id, defaults": lambda: GRPO("MlpPolicy", "CartPole-v1", n_steps=32, seed=0),
        "one-env VecEnv, defaults": lambda: GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, seed=0),
        "plain gym env": lambda: GRPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, seed=0),
        "3 envs, group_size=8": lambda: GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=3), group_size=8, n_steps=32),
        "one env, Dict obs": lambda: GRPO("MultiInputPolicy", DummyVecEnv([SimpleMultiObsEnv]), group_size=2, n_steps=40),
        "one env, CnnPolicy": lambda: GRPO(
            "CnnPolicy", DummyVecEnv([image]), group_size=2, n_steps=40, batch_size=None, n_epochs=1
        ),
        "VecTransposeImage": lambda: GRPO(
            "CnnPolicy", VecTransposeImage(DummyVecEnv([transposed])), group_size=2, n_steps=40, n_epochs=1
        ),
        "one env, gSDE": lambda: GRPO(
            "MlpPolicy", DummyVecEnv([lambda: IdentityEnvBox(ep_length=5)]), group_size=2, n_steps=20, use_sde=True
        ),
        "one env, VecNormalize": lambda: GRPO(
            "MlpPolicy", VecNormalize(make_vec_env("CartPole-v1", n_envs=1)), n_steps=64, group_size=2
        ),
        "Taxi-v4": lambda: GRPO("MlpPolicy", "Taxi-v4", n_envs=2, group_size=2, n_steps=200),
        "float64 Box actions": lambda: GRPO("MlpPolicy", DummyVecEnv([Float64BoxActions]), group_size=2, n_steps=20),
    }


@pytest.mark.parametrize("case", list(_api_cases()))
def test_every_sb3_env_pattern_works(case):
    model = _api_cases()[case]()
    seen = capture_training_batches(model)
    model.learn(1024)
    assert seen, "at least one group was completed and trained on"
    for batch, estimate in seen:
        assert th.isfinite(estimate.advantages).all()
        # every group holds group_size whole episodes
        last = batch.group[th.cumsum(batch.lengths, 0) - 1]
        counts = th.tensor([int((last == g).sum()) for g in th.unique(batch.group)])
        assert (counts == model.group_size).all()
    obs = model.get_env().reset()
    action, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(action[0])


def test_one_env_determinism_under_a_seed():
    def run():
        model = GRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), n_steps=64, group_size=4, seed=7)
        model.learn(512)
        return model

    assert params_equal(run().policy, run().policy)


def test_active_step_fraction_from_the_first_update_on_cartpole():
    model = GRPO("MlpPolicy", "CartPole-v1", n_steps=64, seed=0)
    writer = capture_logger(model)
    model.learn(64 * 8 * 4)
    fractions = [r["rollout/active_step_fraction"] for r in writer.records if "rollout/active_step_fraction" in r]
    assert len(fractions) >= 3 and min(fractions) >= 0.95


def test_loading_a_file_of_another_algorithm_or_a_missing_file(tmp_path):
    import stable_baselines3 as sb3

    from sb3_pg_extras import REINFORCE

    GRPO("MlpPolicy", length_env(2), group_size=2, n_steps=8).save(tmp_path / "grpo.zip")
    with pytest.raises(ValueError, match=r"saved by GRPO, not REINFORCE: load it with GRPO.load"):
        REINFORCE.load(tmp_path / "grpo.zip")
    with pytest.raises(FileNotFoundError, match=r"No saved model at .*missing$|No saved model"):
        GRPO.load(tmp_path / "missing")
    assert isinstance(GRPO.load(tmp_path / "grpo"), GRPO)  # the .zip suffix is added, as SB3 does
    sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=8).save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not saved by a pg-extras algorithm"):
        GRPO.load(tmp_path / "ppo.zip")


def test_set_parameters_refuses_nan_and_keeps_the_model():
    model = GRPO("MlpPolicy", length_env(2), group_size=2, n_steps=8)
    params = model.get_parameters()
    params["policy"] = {name: t.clone() for name, t in params["policy"].items()}  # not the live tensors
    params["policy"]["action_net.bias"][0] = float("nan")
    before = model.policy.action_net.bias.detach().clone()
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.set_parameters(params)
    assert th.equal(model.policy.action_net.bias, before)


class NeverEnding(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, False, False, {}


def test_an_env_that_never_ends_cannot_hang_learn():
    model = GRPO("MlpPolicy", make_vec_env(NeverEnding, n_envs=4), group_size=4, n_steps=1)
    model.learn(200)  # returns (was: ran forever waiting for the round to end)
    assert model.num_timesteps == 200
    model = GRPO("MlpPolicy", make_vec_env(NeverEnding, n_envs=4), group_size=4, n_steps=16, max_episode_steps=50)
    with pytest.raises(RuntimeError, match=r"run for \d+ steps without ending \(max_episode_steps=50\).*TimeLimit"):
        model.learn(10_000)
    assert model.num_timesteps <= 4 * 64
