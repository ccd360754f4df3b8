"""sb3_pg_extras.TRPO: drop-in for sb3_contrib.TRPO (style of sb3-contrib's test-suite)."""

from __future__ import annotations

import copy
import inspect
import types

import gymnasium as gym
import numpy as np
import pytest
import sb3_contrib.trpo.trpo as contrib_trpo
import stable_baselines3.common.policies as sb3_policies
import torch as th
from gymnasium import spaces
from sb3_contrib import TRPO as ContribTRPO
from sb3_helpers import PointMass3D, capture_training_batches
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback, CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import SubprocVecEnv, VecFrameStack, VecNormalize
from torch import nn
from torch.distributions import Categorical, Normal, kl_divergence

import sb3_pg_extras.trpo.algo as algo
from pg_extras import returns_to_go
from sb3_pg_extras import TRPO
from sb3_pg_extras.common.buffers import EpisodeBuffer
from sb3_pg_extras.trpo import MlpPolicy, reachable_parameters

SMALL = dict(n_steps=32, batch_size=32, n_critic_updates=2, policy_kwargs=dict(net_arch=[16]))
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


def make(env_fn, seed: int = 0, n_envs: int = 2, **kwargs) -> TRPO:
    return TRPO("MlpPolicy", make_vec_env(env_fn, n_envs=n_envs, seed=seed), seed=seed, **{**SMALL, **kwargs})


# ----------------------------------------------------------------------------------------------------------------------
# Drop-in: signature, logger keys, spaces, policies, SB3 features
# ----------------------------------------------------------------------------------------------------------------------
def test_constructor_signature_is_a_superset_of_sb3_contrib():
    ours = inspect.signature(TRPO.__init__).parameters
    theirs = inspect.signature(ContribTRPO.__init__).parameters
    # Same names in the same positions (positional calls keep working), same defaults
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, param in theirs.items():
        assert ours[name].default == param.default, name
        assert ours[name].kind == param.kind, name
    assert ours["advantage_estimator"].default == "gae"
    assert set(TRPO.policy_aliases) == set(ContribTRPO.policy_aliases)


def test_same_logger_keys_as_sb3_contrib():
    keys = {}
    for cls in (TRPO, ContribTRPO):
        env = make_vec_env(lambda: IdentityEnvBox(ep_length=8), n_envs=2, seed=0)
        model = cls("MlpPolicy", env, seed=0, **SMALL)
        model.learn(64)  # the train/ keys of the last update are still in the logger
        keys[cls] = {k for k in model.logger.name_to_value if k.startswith("train/")}
    assert keys[ContribTRPO] <= keys[TRPO]
    assert {"train/policy_objective", "train/kl_divergence_loss", "train/is_line_search_success", "train/std"} <= keys[TRPO]


@pytest.mark.parametrize("space", list(SPACE_ENVS))
def test_every_action_space_learns_briefly(space):
    model = make(SPACE_ENVS[space])
    before = flat_params(model).clone()
    model.learn(128)
    assert model._n_updates == 2
    assert not th.equal(before, flat_params(model))
    assert model.last_trust_region_result is not None
    obs = model.env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(action[0])


@pytest.mark.parametrize(
    "policy, env_fn",
    [
        ("CnnPolicy", lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1)),
        ("MultiInputPolicy", lambda: SimpleMultiObsEnv(random_start=True)),
    ],
)
def test_cnn_and_multi_input_policies(policy, env_fn):
    model = TRPO(policy, make_vec_env(env_fn, n_envs=2, seed=0), seed=0, n_steps=16, batch_size=16, n_critic_updates=1)
    model.learn(32)
    assert model._n_updates == 1


def test_gsde_and_sub_sampling_and_unshared_extractor():
    model = make(
        SPACE_ENVS["Box"],
        use_sde=True,
        sde_sample_freq=4,
        sub_sampling_factor=3,
        policy_kwargs=dict(net_arch=[16], share_features_extractor=False),
    )
    model.learn(128)
    assert model._n_updates == 2


def test_vec_env_wrappers_and_subprocess():
    venv = VecFrameStack(VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0)), n_stack=2)
    TRPO("MlpPolicy", venv, seed=0, **SMALL).learn(64)
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs=dict(start_method="fork"))
    try:
        TRPO("MlpPolicy", venv, seed=0, **SMALL).learn(64)
    finally:
        venv.close()


def test_callbacks_progress_bar_tensorboard_and_schedule(tmp_path):
    model = TRPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=2, seed=0),
        seed=0,
        tensorboard_log=str(tmp_path / "tb"),
        learning_rate=lambda progress: 1e-3 * progress,
        **SMALL,
    )
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=1)
    callbacks = [
        CheckpointCallback(save_freq=32, save_path=str(tmp_path / "ckpt")),
        EvalCallback(eval_env, eval_freq=32, n_eval_episodes=1),
    ]
    model.learn(128, callback=callbacks, progress_bar=True)
    assert list((tmp_path / "tb").rglob("events.out.tfevents*"))
    assert list((tmp_path / "ckpt").glob("*.zip"))
    lr = model.policy.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3 * model._current_progress_remaining) and lr < 1e-3


def test_a_false_callback_stops_training():
    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 5

    model = make("CartPole-v1")
    model.learn(1000, callback=Stop())
    assert model.num_timesteps == 10 and model._n_updates == 0


# ----------------------------------------------------------------------------------------------------------------------
# Reproducibility, save / load, parameters
# ----------------------------------------------------------------------------------------------------------------------
def test_same_seed_same_run():
    # SB3 seeds the global generators at construction: build each model right before its run
    a = make("CartPole-v1", seed=3).learn(128)
    b = make("CartPole-v1", seed=3).learn(128)
    assert th.equal(flat_params(a), flat_params(b))
    assert not th.equal(flat_params(a), flat_params(make("CartPole-v1", seed=4).learn(128)))


def test_save_load_predict_and_continued_training(tmp_path):
    model = make("CartPole-v1", seed=0)
    model.learn(128)
    model.save(tmp_path / "trpo")
    loaded = TRPO.load(
        tmp_path / "trpo",
        env=make_vec_env("CartPole-v1", n_envs=2, seed=9),
        device="cpu",
        custom_objects={"learning_rate": 1e-3},
    )
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.target_kl == model.target_kl and loaded.advantage_estimator == "gae"
    # Continued training from the same seed and env is identical (optimizer state and counters were restored)
    for m in (model, loaded):
        m.set_env(make_vec_env("CartPole-v1", n_envs=2, seed=5))
        m.set_random_seed(5)
        m.learn(128, reset_num_timesteps=False)
    assert model._n_updates == loaded._n_updates == 4
    assert th.equal(flat_params(model), flat_params(loaded))


def test_get_set_parameters_and_loading_into_sb3_contrib(tmp_path):
    a, b = make("CartPole-v1", seed=0), make("CartPole-v1", seed=1)
    a.learn(64)
    b.set_parameters(a.get_parameters())
    assert th.equal(flat_params(a), flat_params(b))
    # Same save format both ways: a model saved by us loads in sb3-contrib, and one of sb3-contrib's loads in ours
    a.save(tmp_path / "ours")
    theirs = ContribTRPO.load(tmp_path / "ours", device="cpu")
    obs = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    assert np.array_equal(a.predict(obs, deterministic=True)[0], theirs.predict(obs, deterministic=True)[0])
    contrib = ContribTRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **SMALL).learn(64)
    contrib.save(tmp_path / "theirs")
    ours = TRPO.load(tmp_path / "theirs", env=make_vec_env("CartPole-v1", n_envs=2, seed=0), device="cpu")
    assert np.array_equal(contrib.predict(obs, deterministic=True)[0], ours.predict(obs, deterministic=True)[0])
    assert ours.advantage_estimator == "gae"
    ours.learn(64)  # and trains on


# ----------------------------------------------------------------------------------------------------------------------
# The algorithm: KL bound, actor / critic separation, structural split
# ----------------------------------------------------------------------------------------------------------------------
class KLRecordingTRPO(TRPO):
    """Measures KL(pi_old || pi) over the batch around every update, independently of the implementation."""

    measured: list

    def train(self) -> None:
        obs = self._training_batch().observations
        with th.no_grad():
            old = self._dists(obs)
        before = flat_params(self).clone()
        super().train()
        with th.no_grad():
            new = self._dists(obs)
        old_new = sum(self._kl(p, q) for p, q in zip(old, new, strict=True)).mean().item()
        new_old = sum(self._kl(q, p) for p, q in zip(old, new, strict=True)).mean().item()
        moved = not th.equal(before, flat_params(self))
        self.measured = [*getattr(self, "measured", []), (self.last_trust_region_result, old_new, new_old, moved)]

    def _dists(self, obs):
        inner = self.policy.get_distribution(obs).distribution
        inner = list(inner) if isinstance(inner, list) else [inner]
        return [
            Categorical(logits=d.logits.clone()) if isinstance(d, Categorical) else Normal(d.loc.clone(), d.scale.clone())
            for d in inner
        ]

    @staticmethod
    def _kl(p, q):
        kl = kl_divergence(p, q)
        return kl.sum(-1) if kl.dim() > 1 else kl


@pytest.mark.parametrize("space", ["Discrete", "Box", "MultiDiscrete"])
def test_accepted_updates_respect_the_kl_bound_old_to_new(space):
    target_kl = 0.005
    env = make_vec_env(SPACE_ENVS[space], n_envs=2, seed=0)
    model = KLRecordingTRPO("MlpPolicy", env, seed=0, target_kl=target_kl, **SMALL)
    model.learn(32 * 2 * 4)
    accepted = 0
    for result, old_new, new_old, _ in model.measured:
        if result.accepted:
            accepted += 1
            assert 0.0 < old_new <= target_kl * (1 + 1e-4)
            # The reported KL is KL(old || new) (DESIGN.md), not sb3-contrib's KL(new || old)
            assert result.kl == pytest.approx(old_new, rel=1e-3, abs=1e-7)
            assert abs(result.kl - old_new) < abs(result.kl - new_old) or new_old == pytest.approx(old_new, rel=1e-3)
        else:
            assert result.kl == 0.0
    assert accepted >= 2


class ZeroAdvantageTRPO(TRPO):
    def _training_batch(self):  # the one hook train() reads its data from
        batch = super()._training_batch()
        return batch._replace(advantages=th.zeros_like(batch.advantages))


def test_rejected_update_leaves_the_actor_unchanged():
    # Zero advantages: no direction improves the surrogate, so the step is rejected and the actor must not move.
    model = ZeroAdvantageTRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **SMALL)
    actor = {n: p.detach().clone() for n, p in model.policy.named_parameters() if "value" not in n}
    model.learn(64)
    result = model.last_trust_region_result
    assert result is not None and not result.accepted and result.kl == 0.0
    assert model.logger.name_to_value["train/is_line_search_success"] == 0.0
    assert model.logger.name_to_value["train/kl_divergence_loss"] == 0.0
    for name, param in model.policy.named_parameters():
        if name in actor:
            assert th.equal(param, actor[name]), name


class SpyTRPO(TRPO):
    """Snapshots every parameter around the actor step (pg_extras.TrustRegionSettings.step) and the critic phase after it."""

    def _snapshot(self):
        return {n: p.detach().clone() for n, p in self.policy.named_parameters()}

    def train(self) -> None:
        original = algo.TrustRegionSettings.step
        model = self

        def spy(settings, params, *args, **kwargs):
            before = model._snapshot()
            result = original(settings, params, *args, **kwargs)
            model.actor_phase = (before, model._snapshot(), result)
            model.actor_ids = {id(p) for p in params}
            return result

        algo.TrustRegionSettings.step = spy
        try:
            super().train()
        finally:
            algo.TrustRegionSettings.step = original
        self.critic_phase = (self.actor_phase[1], self._snapshot())


def _changed(before, after):
    return {n for n in before if not th.equal(before[n], after[n])}


def _check_separation(model: SpyTRPO, actor_names: set, critic_names: set):
    names = {id(p): n for n, p in model.policy.named_parameters()}
    assert {names[i] for i in model.actor_ids} == actor_names
    before, after, result = model.actor_phase
    assert result.accepted
    assert _changed(before, after) == actor_names  # the policy step moves the actor only
    before, after = model.critic_phase
    assert _changed(before, after) == critic_names  # the critic step moves the critic only


def test_critic_updates_never_move_actor_parameters():
    model = SpyTRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **SMALL)
    model.learn(64)
    names = {n for n, _ in model.policy.named_parameters()}
    critic = {n for n in names if "value" in n}
    _check_separation(model, names - critic, critic)


class OddNamesExtractor(nn.Module):
    """Actor branch called ``value_stream``, critic branch called ``policy_stream``: names say nothing."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.latent_dim_pi = self.latent_dim_vf = 8
        self.value_stream = nn.Sequential(nn.Linear(feature_dim, 8), nn.Tanh())
        self.policy_stream = nn.Sequential(nn.Linear(feature_dim, 8), nn.Tanh())

    def forward(self, features):
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features):
        return self.value_stream(features)

    def forward_critic(self, features):
        return self.policy_stream(features)


class OddNamesPolicy(ActorCriticPolicy):
    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = OddNamesExtractor(self.features_dim)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        # Rename the heads too: the action head is now "value_head", the value head "scorer"
        self.value_head, self.scorer = self.action_net, self.value_net
        del self.action_net, self.value_net
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def __getattr__(self, name):
        aliases = {"action_net": "value_head", "value_net": "scorer"}
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name not in aliases:
                raise
            return super().__getattr__(aliases[name])


def test_custom_policy_with_arbitrary_parameter_names():
    model = SpyTRPO(OddNamesPolicy, make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **SMALL)
    names = {n for n, _ in model.policy.named_parameters()}
    assert any("value" in n for n in names) and not any("value_net" in n for n in names)
    model.learn(64)
    actor = {n for n in names if n.startswith(("mlp_extractor.value_stream", "value_head"))}
    _check_separation(model, actor, names - actor)


def test_reachable_parameters_follows_the_graph_not_names():
    value, other = nn.Linear(3, 2), nn.Linear(3, 2)
    out = value(th.ones(1, 3)).tanh().sum() * 2
    assert reachable_parameters([out], [*other.parameters(), *value.parameters()]) == list(value.parameters())
    assert reachable_parameters([th.ones(2)], list(value.parameters())) == []


# ----------------------------------------------------------------------------------------------------------------------
# The same update as sb3-contrib's
# ----------------------------------------------------------------------------------------------------------------------
def _one_update_each(env_id: str, monkeypatch, **kwargs) -> tuple[dict, dict, dict, TRPO, ContribTRPO]:
    """sb3-contrib's TRPO and ours from the same weights, one ``train()`` each on the same rollout (collected once).

    In float64 (SB3's ``preprocess_obs`` casts observations to float32, so it is patched), with sb3-contrib's conjugate
    gradient started at ``x0 = 0`` instead of ``1e-4 * randn`` and its default ``cg_damping=0.1``: the two differ only
    by rounding then, and a well-damped CG does not amplify it. (With ``cg_damping=1e-3`` the Fisher is so
    ill-conditioned that 15 CG iterations turn relative perturbations of 1e-15 of the gradient into 1e-5 to 1e-3 of
    ``s^T F s``, measured, in float64 and in either implementation.) One critic minibatch (the whole rollout) makes the
    critic independent of the shuffle, which SB3 draws from numpy and we from torch.
    """
    hyper = {**dict(n_steps=128, batch_size=256, gae_lambda=0.98, n_critic_updates=3), **kwargs}
    monkeypatch.setattr(sb3_policies, "preprocess_obs", lambda obs, *args, **kw: obs.double())
    solver = contrib_trpo.conjugate_gradient_solver

    def zero_start(matvec, b, max_iter=10, residual_tol=1e-10):
        with monkeypatch.context() as patch:
            patch.setattr(th, "randn_like", th.zeros_like)
            return solver(matvec, b, max_iter, residual_tol)

    monkeypatch.setattr(contrib_trpo, "conjugate_gradient_solver", zero_start)
    ours_only = {k: hyper.pop(k) for k in ("kl_reduction", "ours_target_kl", "ours_cg_damping") if k in hyper}
    kl_reduction = ours_only.get("kl_reduction", "mean")
    ours_hyper = {**hyper, "kl_reduction": kl_reduction}
    for key in ("target_kl", "cg_damping"):
        if f"ours_{key}" in ours_only:
            ours_hyper[key] = ours_only[f"ours_{key}"]
    env = MULTI_DIM_ENVS.get(env_id, env_id)
    theirs = ContribTRPO("MlpPolicy", make_vec_env(env, n_envs=2, seed=0), seed=0, **hyper)
    ours = TRPO("MlpPolicy", make_vec_env(env, n_envs=2, seed=0), seed=0, **ours_hyper)
    theirs.policy.double()
    ours.policy.double()
    ours.policy.load_state_dict(theirs.policy.state_dict())
    ours._setup_learn(ours.n_steps * ours.n_envs)  # (the logger)
    _, callback = theirs._setup_learn(theirs.n_steps * theirs.n_envs)
    theirs.collect_rollouts(theirs.env, callback, theirs.rollout_buffer, theirs.n_steps)
    buffer = theirs.rollout_buffer
    for name in ("observations", "actions", "rewards", "values", "log_probs", "advantages", "returns"):
        setattr(buffer, name, getattr(buffer, name).astype(np.float64))
    ours.rollout_buffer = copy.deepcopy(buffer)
    before = copy.deepcopy(theirs.policy.state_dict())
    for model in (theirs, ours):
        th.manual_seed(0)
        np.random.seed(0)
        model.train()
    return before, theirs.policy.state_dict(), ours.policy.state_dict(), ours, theirs


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_one_update_equals_sb3_contribs_from_the_same_state_and_rollout(env_id, monkeypatch):
    # The surrogate and its gradient, advantage normalisation, Fisher-vector products (our MLP fast path), CG, the
    # step length sqrt(2 target_kl / s^T F s), the accepted line-search fraction, which parameters are the actor
    # (log_std too), and the critic's epochs: each parameter ends where sb3-contrib's does, to float64 rounding.
    before, theirs, ours, model, contrib = _one_update_each(env_id, monkeypatch)
    assert model.last_trust_region_result.accepted
    assert contrib.logger.name_to_value["train/is_line_search_success"] == 1.0
    assert set(ours) == set(theirs) == set(before)
    for name in before:
        step = theirs[name] - before[name]
        assert step.abs().max() > 0, name  # every parameter moved (actor by the step, critic by Adam)
        th.testing.assert_close(ours[name], theirs[name], rtol=0, atol=2e-6 * step.abs().max().item(), msg=name)


def _actor_steps(before: dict, theirs: dict, ours: dict, model: TRPO) -> tuple[th.Tensor, th.Tensor]:
    """The two parameter steps of the actor (policy_net, action_net, log_std) as flat vectors."""
    names = [n for n in before if not n.startswith(("value_net", "mlp_extractor.value_net"))]
    assert any(n.startswith("action_net") for n in names)
    return (
        th.cat([(theirs[n] - before[n]).flatten() for n in names]),
        th.cat([(ours[n] - before[n]).flatten() for n in names]),
    )


MULTI_DIM_ENVS = {"PointMass3D": lambda: PointMass3D(), "MultiBinary3": lambda: IdentityEnvMultiBinary(3, ep_length=8)}
# rl-zoo3's MuJoCo TRPO settings (hyperparams/trpo.yml), with one critic minibatch (see _one_update_each)
MUJOCO_SETTINGS = dict(n_steps=1024, batch_size=2048, n_critic_updates=3, cg_max_steps=25, cg_damping=0.1)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("PointMass3D", {}),
        ("PointMass3D", dict(cg_max_steps=25, cg_damping=0.3, target_kl=0.04)),
        ("PointMass3D", dict(cg_max_steps=3, cg_damping=0.03)),
        ("PointMass3D", dict(use_sde=True, cg_max_steps=10)),
        ("MultiBinary3", dict(cg_max_steps=10)),
        ("Hopper-v5", MUJOCO_SETTINGS),
        ("HalfCheetah-v5", {**MUJOCO_SETTINGS, "target_kl": 0.04}),
    ],
)
def test_one_update_equals_sb3_contribs_on_multi_dimensional_actions(env_id, kwargs, monkeypatch):
    # sb3-contrib averages the per-dimension KLs of a Box / MultiBinary action (kl_reduction="mean", our default):
    # the trust region and the damping mean the same, so the step is the same, with several CG steps and dampings.
    if env_id.endswith("-v5"):
        pytest.importorskip("mujoco", reason="MuJoCo envs need the extra: pip install -e '.[mujoco]'")
    before, theirs, ours, model, contrib = _one_update_each(env_id, monkeypatch, **kwargs)
    assert model.kl_reduction == "mean" and model.last_trust_region_result.accepted
    assert contrib.logger.name_to_value["train/is_line_search_success"] == 1.0
    step_theirs, step_ours = _actor_steps(before, theirs, ours, model)
    cosine = th.nn.functional.cosine_similarity(step_theirs, step_ours, dim=0).item()
    assert cosine >= 0.9999, cosine
    assert abs(step_ours.norm().item() / step_theirs.norm().item() - 1.0) <= 1e-3
    # (The line search tests KL(old || new) where sb3-contrib tests KL(new || old): equal to second order, so a step
    # whose KL sits within third-order terms of target_kl can be accepted by one and shrunk once more by the other;
    # e.g. cg_max_steps=3, cg_damping=0.01 here gives a ratio of exactly 0.8 with the same direction.)
    for name in before:  # critic included
        th.testing.assert_close(ours[name], theirs[name], rtol=0, atol=1e-5 * (theirs[name] - before[name]).abs().max().item())


def test_joint_kl_reduction_is_mean_with_the_radius_and_damping_times_the_action_dimension(monkeypatch):
    # docs/maths.md#kl-reduction: "joint" with (d * delta, d * lambda) takes exactly the step of "mean" with (delta, lambda)
    d, target_kl, damping = 3, 0.01, 0.1
    joint = dict(kl_reduction="joint", ours_target_kl=d * target_kl, ours_cg_damping=d * damping)
    before, theirs, ours, model, _ = _one_update_each(
        "PointMass3D", monkeypatch, target_kl=target_kl, cg_damping=damping, **joint
    )
    step_theirs, step_ours = _actor_steps(before, theirs, ours, model)
    assert model.kl_reduction == "joint"
    assert th.nn.functional.cosine_similarity(step_theirs, step_ours, dim=0).item() >= 0.9999
    assert abs(step_ours.norm().item() / step_theirs.norm().item() - 1.0) <= 1e-3
    # ...and with the same (delta, lambda) it is another step: a trust region d times smaller, relatively weaker damping
    before, theirs, ours, model, _ = _one_update_each("PointMass3D", monkeypatch, kl_reduction="joint")
    step_theirs, step_ours = _actor_steps(before, theirs, ours, model)
    cosine = th.nn.functional.cosine_similarity(step_theirs, step_ours, dim=0).item()
    assert cosine < 0.9999 or abs(step_ours.norm().item() / step_theirs.norm().item() - 1.0) > 1e-3
    assert model.last_trust_region_result.kl <= 0.01  # the joint KL of the accepted step
    with pytest.raises(ValueError, match="kl_reduction"):
        TRPO("MlpPolicy", "Pendulum-v1", kl_reduction="sum")


# ----------------------------------------------------------------------------------------------------------------------
# Rollouts and advantages
# ----------------------------------------------------------------------------------------------------------------------
def _rollout(env_fn, ours: bool = True, **kwargs) -> TRPO:
    """Build a model (which seeds the global generators) and fill its buffer: with our collection loop and our
    policy's lean sampling (``ours``), or with SB3's ``OnPolicyAlgorithm.collect_rollouts`` and SB3's
    ``ActorCriticPolicy.forward``."""
    model = make(env_fn, n_steps=64, **kwargs)
    _, callback = model._setup_learn(model.n_steps * model.n_envs)
    if ours:
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    else:
        model.policy.forward = types.MethodType(ActorCriticPolicy.forward, model.policy)
        OnPolicyAlgorithm.collect_rollouts(model, model.env, callback, model.rollout_buffer, model.n_steps)
    return model


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "Discrete", "MultiDiscrete"])
def test_our_collection_loop_fills_the_buffer_as_sb3s(env_id):
    # Our loop (one for every estimator) samples actions without the value head and computes the rollout's values
    # in one batch at its end; the buffer is SB3's, to float32 rounding of the batched values: same actions, log-probs,
    # time-limit bootstraps (short time limits), returns and advantages. "Discrete" has Discrete observations too;
    # MultiDiscrete falls back to SB3's distribution.
    env_fn = SPACE_ENVS.get(env_id) or (lambda: gym.make(env_id, max_episode_steps=20))
    ours = _rollout(env_fn, ours=True)
    sb3 = _rollout(env_fn, ours=False)
    assert type(ours.policy) is MlpPolicy and isinstance(ours.policy, ActorCriticPolicy)
    a, b = ours.rollout_buffer, sb3.rollout_buffer
    for name in ("observations", "actions", "episode_starts", "log_probs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("rewards", "values", "advantages", "returns"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-5, err_msg=name)
    assert a.episode_starts[1:].any()  # episodes did end inside the rollout
    if env_id == "Pendulum-v1":  # only time limits end its episodes: SB3's bootstrap ran, to the same rewards
        assert a.episode_starts[1:].sum() >= 4
    assert np.array_equal(ours._last_obs, sb3._last_obs) and ours.num_timesteps == sb3.num_timesteps


def test_collection_loop_computes_no_value_per_step():
    calls = []
    model = make("CartPole-v1", n_steps=64)
    original = model.policy.predict_values
    model.policy.predict_values = lambda obs: calls.append(len(obs)) or original(obs)
    _, callback = model._setup_learn(model.n_steps * model.n_envs)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    assert calls[0] == model.n_steps * model.n_envs  # one batch for the rollout (+ the last observation, timeouts)
    assert len(calls) <= 3


@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_lean_forward_equals_sb3_forward(env_id, deterministic):
    policy = make(env_id).policy
    obs = policy.obs_to_tensor(policy.observation_space.sample()[None].repeat(5, 0))[0]
    outputs = []
    for forward in (policy.forward, types.MethodType(ActorCriticPolicy.forward, policy)):
        th.manual_seed(3)
        with th.no_grad():
            outputs.append(forward(obs, deterministic=deterministic))
    for ours, sb3 in zip(*outputs, strict=True):
        assert th.equal(ours, sb3)


def test_custom_action_distribution_uses_sb3s_forward():
    calls = []

    class Custom(MlpPolicy):
        def _get_action_dist_from_latent(self, latent_pi):
            calls.append(1)
            return super()._get_action_dist_from_latent(latent_pi)

    TRPO(Custom, make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, **SMALL).learn(64)
    assert len(calls) >= 32  # every rollout step went through it


class ConstantAdvantageBuffer(RolloutBuffer):
    def compute_returns_and_advantage(self, last_values, dones) -> None:
        super().compute_returns_and_advantage(last_values, dones)
        self.advantages[:] = 1.0


def test_custom_rollout_buffer_is_used():
    model = _rollout("CartPole-v1", rollout_buffer_class=ConstantAdvantageBuffer)
    assert np.all(model.rollout_buffer.advantages == 1.0)  # its own compute_returns_and_advantage ran
    model.train()  # normalised constant advantages are zero: the step is rejected, nothing breaks
    assert model.last_trust_region_result is not None and not model.last_trust_region_result.accepted


def test_training_works_after_a_callback_read_the_buffer():
    class ReadBuffer(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            next(self.model.rollout_buffer.get(batch_size=8))  # flattens the buffer's arrays in place

    model = make("CartPole-v1")
    model.learn(128, callback=ReadBuffer())
    assert model._n_updates == 2 and model.last_trust_region_result.accepted


def test_monte_carlo_estimator_trains_on_whole_episodes():
    model = TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, n_steps=64, batch_size=64,
                 n_critic_updates=1, advantage_estimator="mc")  # fmt: skip
    seen = capture_training_batches(model)
    model.learn(256)
    assert len(seen) == 2 and isinstance(model.rollout_buffer, EpisodeBuffer)
    for batch, estimate in seen:
        ends = th.cumsum(batch.lengths, 0) - 1
        assert (batch.terminated | batch.truncated)[ends].all()  # every episode is whole
        expected = returns_to_go(batch.rewards, batch.terminated, batch.truncated, gamma=model.gamma,
                                 next_values=batch.next_values)  # fmt: skip
        th.testing.assert_close(estimate.returns, expected)
        with th.no_grad():
            values = model.policy.predict_values(batch.observations).flatten()
        assert estimate.advantages.shape == values.shape


def test_monte_carlo_estimator_with_dict_observations_and_its_buffer_rule():
    model = TRPO(
        "MultiInputPolicy",
        make_vec_env(lambda: SimpleMultiObsEnv(random_start=True), n_envs=2, seed=0),
        seed=0,
        n_steps=16,
        batch_size=16,
        n_critic_updates=1,
        advantage_estimator="mc",
    )
    model.learn(64)
    assert isinstance(model.rollout_buffer, EpisodeBuffer) and model._n_updates >= 1
    with pytest.raises(ValueError, match="rollout_buffer_class=None"):
        TRPO("MlpPolicy", "CartPole-v1", advantage_estimator="mc", rollout_buffer_class=ConstantAdvantageBuffer)


def test_group_estimator_is_a_critic_free_trpo(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=3, seed=0)
    model = TRPO("MlpPolicy", env, seed=0, n_steps=64, advantage_estimator="group", group_size=4)
    assert model.policy.value_net is None
    assert not any("value" in name for name, _ in model.policy.named_parameters())
    seen = capture_training_batches(model)
    model.learn(3 * 64 * 3)
    assert seen and model.last_trust_region_result is not None
    for batch, _ in seen:  # whole groups of 4 episodes
        last = batch.group[th.cumsum(batch.lengths, 0) - 1]
        assert all(int((last == g).sum()) == 4 for g in th.unique(batch.group))
    model.save(tmp_path / "trpo_group.zip")
    loaded = TRPO.load(tmp_path / "trpo_group.zip", env=env)
    assert loaded.advantage_estimator == "group" and loaded.policy.value_net is None
    loaded.learn(64, reset_num_timesteps=False)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_kl=0.0), "target_kl"),
        (dict(target_kl=-0.1), "target_kl"),
        (dict(cg_max_steps=0), "cg_max_steps"),
        (dict(cg_damping=-1.0), "cg_damping"),
        (dict(line_search_shrinking_factor=1.0), "line_search_shrinking_factor"),
        (dict(line_search_max_iter=0), "line_search_max_iter"),
        (dict(n_critic_updates=-1), "n_critic_updates"),
        (dict(sub_sampling_factor=0), "sub_sampling_factor"),
        (dict(batch_size=0), "batch_size"),
        (dict(gae_lambda=1.5), "gae_lambda"),
        (dict(advantage_estimator="td"), "advantage_estimator"),
        (dict(advantage_estimator="group", group_size=1), "group_size=1 is invalid"),
        (dict(n_steps=1, normalize_advantage=True), "n_steps \\* n_envs"),
        (dict(target_kl=float("inf")), "target_kl.*finite"),
        (dict(target_kl=float("nan")), "target_kl"),
        (dict(target_kl="0.01"), "target_kl='0.01' is a string"),
        (dict(gamma="0.99"), "gamma='0.99' is a string"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(normalize_advantage="no"), "normalize_advantage"),
        (dict(sub_sampling_factor=32), "sub_sampling_factor=32 .*sub_sampling_factor <= 16"),
        (dict(sub_sampling_factor=100), "sub_sampling_factor"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1), **{**SMALL, **kwargs})


@pytest.mark.parametrize(
    "action_space",
    [spaces.Tuple([spaces.Discrete(2), spaces.Discrete(2)]), spaces.Dict({"a": spaces.Discrete(2)})],
)
def test_unsupported_action_space_is_a_clear_value_error(action_space):
    class OddActionEnv(IdentityEnv):
        def __init__(self):
            super().__init__(space=spaces.Discrete(2))
            self.action_space = action_space

    with pytest.raises(ValueError, match=f"action space {type(action_space).__name__}.*MultiDiscrete.*wrapper"):
        TRPO("MlpPolicy", OddActionEnv())


class HugeRewardEnv(gym.Wrapper):
    def __init__(self, scale: float):
        super().__init__(gym.make("CartPole-v1"))
        self.scale = scale

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward * self.scale, terminated, truncated, info


@pytest.mark.parametrize("scale", [3e38, float("nan")])
def test_non_finite_returns_raise_a_clear_error_before_any_update(scale):
    model = TRPO("MlpPolicy", make_vec_env(lambda: HugeRewardEnv(scale), n_envs=2, seed=0), seed=0, **SMALL)
    before = flat_params(model).clone()
    # a NaN reward is named as the rewards (the env's fault); a finite reward that overflows the returns, as those
    match = r"TRPO rollout rewards.*NaN" if scale != scale else r"TRPO rollout (returns|advantages|values).*VecNormalize"
    with pytest.raises(ValueError, match=match):
        model.learn(64)
    assert th.equal(before, flat_params(model))  # no NaN weights


def test_a_diverging_critic_raises_a_clear_error():
    model = TRPO("MlpPolicy", make_vec_env(lambda: HugeRewardEnv(1e30), n_envs=2, seed=0), seed=0, **SMALL)
    with pytest.raises(ValueError, match=r"value loss.*critic diverged"):
        model.learn(64)  # the returns are finite (1e31) but their square overflows float32
    assert bool(th.isfinite(flat_params(model)).all())


def test_no_critic_updates_is_allowed():
    model = make("CartPole-v1", n_critic_updates=0)
    critic = [p.detach().clone() for n, p in model.policy.named_parameters() if "value" in n]
    model.learn(64)
    assert np.isnan(model.logger.name_to_value["train/value_loss"])
    after = [p for n, p in model.policy.named_parameters() if "value" in n]
    assert all(th.equal(a, b) for a, b in zip(critic, after, strict=True))


def test_user_optimizer_kwargs_are_kept():
    model = make("CartPole-v1", policy_kwargs=dict(net_arch=[16], optimizer_kwargs=dict(eps=1e-7)))
    assert model.policy.optimizer.param_groups[0]["eps"] == 1e-7
    assert not model.policy.optimizer.param_groups[0]["fused"]
    default = make("CartPole-v1")  # SB3's default Adam(eps=1e-5), with torch's fused kernel
    assert type(default.policy.optimizer) is th.optim.Adam and default.policy.optimizer.param_groups[0]["eps"] == 1e-5
    assert default.policy.optimizer.param_groups[0]["fused"]
    assert default.policy_kwargs == SMALL["policy_kwargs"]  # what is saved is what the user passed


@pytest.mark.parametrize(
    "optimizer_class, optimizer_kwargs",
    [(th.optim.AdamW, {}), (th.optim.SGD, dict(momentum=0.9, weight_decay=1e-3)), (th.optim.RMSprop, {})],
)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_any_optimizer_class_trains_the_critic_only(env_id, optimizer_class, optimizer_kwargs):
    # (sharing optimizer state between two optimizers crashed with AdamW: 'unexpected keyword argument ...')
    policy_kwargs = dict(net_arch=[16], optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
    model = SpyTRPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=0), seed=0, **{**SMALL, "policy_kwargs": policy_kwargs})
    model.learn(64)
    assert type(model.policy.optimizer) is optimizer_class
    names = {n for n, _ in model.policy.named_parameters()}
    critic = {n for n in names if "value" in n}
    before, after = model.critic_phase
    assert _changed(before, after) == critic  # weight decay / momentum never reach the actor
