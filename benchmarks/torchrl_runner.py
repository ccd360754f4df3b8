"""Run one TorchRL pipeline on one env with one seed and record an evaluation curve (the TorchRL side of ``run.py``).

Every pipeline is a :class:`~torchrl.collectors.Collector` over a batched env (a gymnasium ``SyncVectorEnv`` wrapped by
:class:`~torchrl.envs.GymWrapper`, ``AutoresetMode.DISABLED`` so that TorchRL drives the partial resets), a loss
module and an optimizer loop. The names ``run.py`` dispatches here:

* ``torchrl_grpo``: :class:`torchrl_pg_extras.GRPOLoss`; same-seed groups from :class:`~torchrl_pg_extras.GroupedEnv`
  (the core's group scheduler: a finished sub-env takes the next member at once), whole groups from
  :class:`~torchrl_pg_extras.GroupBatcher` over a fixed-frame collector, advantages from
  :class:`~torchrl_pg_extras.GroupRelativeAdvantage` (critic-free);
* ``torchrl_reinforce_pgx``: :class:`torchrl_pg_extras.REINFORCELoss` with a learned baseline (seed 2.3) and the
  default Monte-Carlo estimator on complete episodes (``Collector(trajs_per_batch=...)``);
* ``torchrl_trpo``: :class:`torchrl_pg_extras.TRPOLoss` (GAE, trust-region actor step) driven by
  :class:`~torchrl_pg_extras.TRPOStepper`;
* ``torchrl_reinforce`` (competitor): :class:`torchrl.objectives.ReinforceLoss` with its default GAE estimator;
* ``torchrl_mc_ppo`` (competitor, TorchRL's own critic-free recipe): :class:`torchrl.objectives.llm.MCAdvantage`
  (``trajectory_return="sum"``: each episode's return standardised over its group) and
  :class:`~torchrl.objectives.ClipPPOLoss` without a critic, on complete episodes from
  ``Collector(trajs_per_batch=...)``. TorchRL has no same-start groups for control envs, so a group is
  ``group_size`` consecutive finished episodes (each from its own reset), the setting of de Oliveira et al. 2025;
  the other hyperparameters are our GRPO's;
* ``torchrl_ppo`` (competitor): :class:`torchrl.objectives.ClipPPOLoss` with a critic and GAE, RL Zoo's PPO
  hyperparameters (CartPole: 8 envs, n_steps 32, batch 256, 20 epochs, gae_lambda 0.8, gamma 0.98, linear lr 1e-3
  and clip 0.2, Adam eps 1e-5, max_grad_norm 0.5, vf_coef 0.5 as SB3).

Networks are the TorchRL examples' (``examples/torchrl/_common.py``: 64x64 tanh MLPs, categorical or TanhNormal
policy). Evaluation: ``n_eval_episodes`` episodes on a separate batched env, one episode per sub-env, with the
deterministic policy (``ExplorationType.DETERMINISTIC``: argmax / mode); its time is kept out of ``train_time``.
Env steps are the frames the collector stepped (in-flight episodes and members held back by ``GroupBatcher``
count: ``GroupBatcher.env_steps``, the frames of fixed-frame batches, ``Collector.state_dict()["frames"]`` for
trajectory collectors), so env-steps/s compares with SB3's ``num_timesteps``. Tuned on seeds 0-2 (``python -m
benchmarks.torchrl_runner --tune``); ``DEFAULTS`` holds the result.

Usage::

    python -m benchmarks.torchrl_runner torchrl_grpo --seeds 0 1 2 --budget 100000
    python -m benchmarks.torchrl_runner torchrl_trpo --set max_kl=0.02 --set steps_per_env=32
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import multiprocessing as mp
import statistics
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from tensordict import TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, ExplorationType, GymWrapper, TransformedEnv, VecNormV2, set_exploration_type
from torchrl.objectives import ClipPPOLoss, ReinforceLoss, ValueEstimators
from torchrl.objectives.llm import MCAdvantage
from torchrl_pg_extras.configs import envs as config_envs
from torchrl_pg_extras.configs import load_config

from benchmarks.common import Curve
from sb3_pg_extras.registry import held_out_seeds
from torchrl_pg_extras import (
    GreedyMemberPolicy,
    GroupBatcher,
    GroupedEnv,
    GroupRelativeAdvantage,
    GRPOLoss,
    REINFORCELoss,
    TRPOLoss,
    TRPOStepper,
)

__all__ = ["DEFAULTS", "TORCHRL_ALGOS", "config_for", "run_torchrl"]

TORCHRL_ALGOS = ("torchrl_grpo", "torchrl_reinforce_pgx", "torchrl_trpo", "torchrl_reinforce", "torchrl_ppo", "torchrl_mc_ppo")

# Hyperparameters per algorithm and env. Ours are the TorchRL config files (torchrl_configs/<algo>.yaml, installed as
# torchrl_pg_extras.configs), which the example scripts read too; the competitors keep RL Zoo's (PPO) or TorchRL's
# defaults (ReinforceLoss: GAE), here.
OUR_CONFIGS = {"torchrl_grpo": "grpo", "torchrl_reinforce_pgx": "reinforce", "torchrl_trpo": "trpo"}


def _mc_ppo_from_grpo(grpo: dict[str, Any]) -> dict[str, Any]:
    """TorchRL's critic-free recipe (``torchrl_mc_ppo``) with our GRPO entry's groups, epochs, lr and clipping."""
    same = ("num_envs", "group_size", "groups_per_batch", "epochs", "lr", "lr_linear", "max_grad_norm", "hidden")
    return {
        **{key: grpo[key] for key in same},
        "steps_per_poll": max(grpo["frames_per_batch"] // grpo["num_envs"], 1),
        "clip": grpo["clip_epsilon"],
    }


# fmt: off
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    **{name: {env: load_config(algo, env) for env in config_envs(algo)} for name, algo in OUR_CONFIGS.items()},
    "torchrl_reinforce": {
        "CartPole-v1": dict(num_envs=8, steps_per_env=32, lr=1e-3, gamma=0.99, gae_lambda=0.95, max_grad_norm=1.0,
                            hidden=64),
        "Pendulum-v1": dict(num_envs=8, steps_per_env=32, lr=1e-3, gamma=0.9, gae_lambda=0.95, max_grad_norm=1.0,
                            hidden=64),
    },
    "torchrl_mc_ppo": {  # our GRPO's settings on each env (same groups, epochs, lr): only the grouping and the loss
        # differ; Pendulum: the settings our GRPO had before the recipe (TanhNormal actor, full-batch epochs)
        **{env: _mc_ppo_from_grpo(load_config("grpo", env)) for env in config_envs("grpo")},
        "Pendulum-v1": dict(num_envs=16, group_size=4, groups_per_batch=2, steps_per_poll=8, epochs=8, lr=1e-3,
                            lr_linear=False, clip=0.2, max_grad_norm=1.0, hidden=64),
    },
    "torchrl_ppo": {
        "CartPole-v1": dict(num_envs=8, steps_per_env=32, batch_size=256, epochs=20, gamma=0.98, gae_lambda=0.8, lr=1e-3,
                            lr_linear=True, clip=0.2, clip_linear=True, entropy_coeff=0.0, critic_coeff=0.5,
                            max_grad_norm=0.5, hidden=64),
        "Pendulum-v1": dict(num_envs=4, steps_per_env=1024, batch_size=64, epochs=10, gamma=0.9, gae_lambda=0.95, lr=1e-3,
                            lr_linear=False, clip=0.2, clip_linear=False, entropy_coeff=0.0, critic_coeff=0.5,
                            max_grad_norm=0.5, hidden=64),
    },
}
# fmt: on


def config_for(name: str, env_id: str) -> dict[str, Any]:
    """The hyperparameters of ``name`` on ``env_id`` (the CartPole-v1 ones for a discrete env not listed,
    the Pendulum-v1 ones for a continuous one)."""
    if name not in DEFAULTS:
        raise ValueError(f"Unknown TorchRL benchmark algorithm {name!r}: use one of {', '.join(TORCHRL_ALGOS)}.")
    table = DEFAULTS[name]
    if env_id in table:
        return dict(table[env_id])
    discrete = isinstance(gym.make(env_id).action_space, gym.spaces.Discrete)
    return dict(table["CartPole-v1" if discrete else "Pendulum-v1"])


def _load_examples_common() -> ModuleType:
    """``examples/torchrl/_common.py`` (network builders shared with the example scripts)."""
    path = Path(__file__).resolve().parent.parent / "examples" / "torchrl" / "_common.py"
    module = sys.modules.get("_pgx_torchrl_examples_common")
    if module is None:
        spec = importlib.util.spec_from_file_location("_pgx_torchrl_examples_common", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def make_batched_env(env_id: str, num_envs: int, seed: int) -> EnvBase:
    """``num_envs`` copies of ``env_id`` in one gymnasium ``SyncVectorEnv`` wrapped by ``GymWrapper``.

    ``AutoresetMode.DISABLED``: TorchRL resets the finished sub-envs (partial reset), which is also what
    :class:`~torchrl_pg_extras.GroupedEnv` needs to seed them. Integer actions for discrete spaces.
    """
    vec = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env = GymWrapper(vec, categorical_action_encoding=True)
    env.set_seed(seed)
    return env


def _collector(env: EnvBase, policy, frames_per_batch: int, trajs_per_batch: int | None = None, **kwargs: Any) -> Collector:
    if trajs_per_batch is not None:
        kwargs.update(trajs_per_batch=trajs_per_batch, traj_format="cat")
    return Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        auto_register_policy_transforms=False,
        track_traj_ids=trajs_per_batch is not None,
        **kwargs,
    )


def _clip_grad_and_step(optim: torch.optim.Optimizer, total: torch.Tensor, params, max_grad_norm: float | None) -> None:
    optim.zero_grad(set_to_none=True)
    total.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm, foreach=False)  # a few small tensors: no foreach
    optim.step()


def _set_lr(optim: torch.optim.Optimizer, lr: float, linear: bool, progress: float) -> None:
    """Constant ``lr``, or SB3 / RL Zoo's ``lin_<lr>``: ``lr * (1 - progress)`` with progress = frames / budget."""
    for group in optim.param_groups:
        group["lr"] = lr * max(1.0 - progress, 0.0) if linear else lr


def _total(out: TensorDictBase) -> torch.Tensor:
    return sum(v for k, v in out.items() if k.startswith("loss_"))


class _Pipeline:
    """Env, policy, collector and update rule of one algorithm (fixed-frame batches: every frame is in one batch)."""

    actor: torch.nn.Module
    collector: Collector
    env_steps: int = 0
    obs_norm: VecNormV2 | None = None  # the env's running observation normalisation (``normalize_obs``), if any

    def normalized(self, env: EnvBase, hp: dict[str, Any]) -> EnvBase:
        """``env`` with TorchRL's ``VecNorm`` on the observation when ``hp["normalize_obs"]`` (SB3's ``VecNormalize(
        norm_reward=False)``: one running mean and variance over all sub-envs), else ``env``."""
        if not hp.get("normalize_obs", False):
            return env
        env = TransformedEnv(env, _load_examples_common().obs_normalization())
        self.obs_norm = env.transform
        return env

    def batches(self) -> Iterable[TensorDictBase]:
        for batch in self.collector:
            self.env_steps += batch.numel()
            yield batch

    def frames(self) -> int:
        return self.env_steps

    def update(self, batch: TensorDictBase, progress: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.collector.shutdown()


def _networks(env: EnvBase, hidden: int, critic: bool, continuous: str = "tanh_normal"):
    """``(env, actor, critic or None)``: the examples' networks; ``env`` gains the noise a ``continuous="gsde"`` actor
    reads (TorchRL's ``gSDENoise``), otherwise it is returned as it is."""
    common = _load_examples_common()
    cpu = torch.device("cpu")
    actor = common.make_actor(env, hidden, cpu, continuous)
    return common.with_actor_noise(env, actor), actor, (common.make_critic(env, hidden, cpu) if critic else None)


class _EpisodePipeline(_Pipeline):
    """A pipeline on a trajectory collector (``trajs_per_batch``): batches of complete episodes."""

    def batches(self) -> Iterable[TensorDictBase]:
        return self.collector

    def frames(self) -> int:
        # trajectory batches hold only finished episodes: the collector's public state counts every frame it stepped
        return int(self.collector.state_dict()["frames"])


class _GRPO(_Pipeline):
    def __init__(self, env_id: str, seed: int, hp: dict[str, Any]) -> None:
        remax = hp["mode"] == "remax"  # ReMax: one greedy member per group, played with the deterministic action
        env = GroupedEnv(make_batched_env(env_id, hp["num_envs"], seed), hp["group_size"], seed=seed, greedy_member=remax)
        env = self.normalized(env, hp)
        env, self.actor, _ = _networks(env, hp["hidden"], critic=False, continuous=hp["continuous"])
        self.loss = GRPOLoss(
            self.actor,
            clip_epsilon=hp["clip_epsilon"],
            clip_epsilon_high=hp["clip_epsilon_high"],
            kl_coeff=hp["kl_coeff"],
            entropy_coeff=hp["entropy_coeff"],
            loss_aggregation=hp["loss_aggregation"],
            importance_sampling_level=hp["importance_sampling_level"],
            mask_truncated_completions=hp["mask_truncated_completions"],
            top_entropy_quantile=hp["top_entropy_quantile"],
            functional=False,  # the actor is used as it is (no functional parameter swap per call)
        )
        self.advantage = GroupRelativeAdvantage(
            hp["group_size"], mode=hp["mode"], scale=hp["scale"], rloo=hp["rloo"], gamma=hp["gamma"]
        )
        self.optim = torch.optim.Adam(self.loss.parameters(), lr=hp["lr"])
        # compact_obs: no ("next", observation) copies (GRPO has no critic to bootstrap), fewer entries to batch
        policy = GreedyMemberPolicy(self.actor) if remax else self.actor
        self.collector = _collector(env, policy, hp["frames_per_batch"], compact_obs=True)
        self.groups = GroupBatcher(  # "cat": whole episodes one after another, no padding to build
            self.collector,
            groups_per_batch=hp["groups_per_batch"],
            max_policy_lag=hp["max_policy_lag"],
            traj_format="cat",
            dynamic_sampling=hp["dynamic_sampling"],  # DAPO: hold back the groups without a signal, keep collecting
            keep_return_bounds=hp["keep_return_bounds"],
            gamma=hp["gamma"],
        )
        self.hp = hp

    def batches(self) -> Iterable[TensorDictBase]:
        return self.groups

    def frames(self) -> int:
        return self.groups.env_steps  # every env step the collector took (held-back and dropped groups included)

    def update(self, batch: TensorDictBase, progress: float) -> None:
        _set_lr(self.optim, self.hp["lr"], self.hp["lr_linear"], progress)
        batch = self.advantage(batch)
        for _ in range(self.hp["epochs"]):
            for part in _load_examples_common().minibatches(batch, self.hp["batch_size"]):
                _clip_grad_and_step(self.optim, _total(self.loss(part)), self.loss.parameters(), self.hp["max_grad_norm"])


class _ReinforcePgx(_EpisodePipeline):
    def __init__(self, env_id: str, seed: int, hp: dict[str, Any]) -> None:
        env = self.normalized(make_batched_env(env_id, hp["num_envs"], seed), hp)
        env, self.actor, critic = _networks(env, hp["hidden"], critic=hp["baseline"], continuous=hp["continuous"])
        self.loss = REINFORCELoss(self.actor, critic, normalize_advantage=True, critic_coeff=hp["critic_coeff"])
        self.loss.make_value_estimator(gamma=hp["gamma"])
        self.optim = torch.optim.Adam(self.loss.parameters(), lr=hp["lr"])
        self.collector = _collector(env, self.actor, hp["frames_per_batch"], trajs_per_batch=hp["trajs_per_batch"])
        self.hp = hp

    def update(self, batch: TensorDictBase, progress: float) -> None:
        _set_lr(self.optim, self.hp["lr"], self.hp["lr_linear"], progress)
        _clip_grad_and_step(self.optim, _total(self.loss(batch)), self.loss.parameters(), self.hp["max_grad_norm"])


class _TRPO(_Pipeline):
    def __init__(self, env_id: str, seed: int, hp: dict[str, Any]) -> None:
        env = self.normalized(make_batched_env(env_id, hp["num_envs"], seed), hp)
        env, self.actor, critic = _networks(env, hp["hidden"], critic=True, continuous=hp["continuous"])
        self.loss = TRPOLoss(self.actor, critic, max_kl=hp["max_kl"], cg_damping=hp["cg_damping"])
        self.loss.make_value_estimator(gamma=hp["gamma"], lmbda=hp["lmbda"])
        self.stepper = TRPOStepper(
            self.loss,
            torch.optim.Adam(self.loss.critic_parameters(), lr=hp["critic_lr"]),
            critic_updates=hp["critic_updates"],
            critic_batch_size=hp["critic_batch_size"],
        )
        self.collector = _collector(env, self.actor, hp["frames_per_batch"])

    def update(self, batch: TensorDictBase, progress: float) -> None:
        self.stepper.step(None, batch)


class _TorchRLReinforce(_Pipeline):
    def __init__(self, env_id: str, seed: int, hp: dict[str, Any]) -> None:
        env = make_batched_env(env_id, hp["num_envs"], seed)
        env, self.actor, critic = _networks(env, hp["hidden"], critic=True)
        self.loss = ReinforceLoss(self.actor, critic)
        self.loss.make_value_estimator(ValueEstimators.GAE, gamma=hp["gamma"], lmbda=hp["gae_lambda"])
        self.optim = torch.optim.Adam(self.loss.parameters(), lr=hp["lr"])
        self.collector = _collector(env, self.actor, hp["num_envs"] * hp["steps_per_env"])
        self.hp = hp

    def update(self, batch: TensorDictBase, progress: float) -> None:
        _clip_grad_and_step(self.optim, _total(self.loss(batch)), self.loss.parameters(), self.hp["max_grad_norm"])


class _TorchRLPPO(_Pipeline):
    def __init__(self, env_id: str, seed: int, hp: dict[str, Any]) -> None:
        env = make_batched_env(env_id, hp["num_envs"], seed)
        env, self.actor, critic = _networks(env, hp["hidden"], critic=True)
        entropy = hp["entropy_coeff"] > 0
        # functional=False: the networks are used as they are (no functional parameter swap per call, ~10 % faster)
        self.loss = ClipPPOLoss(
            self.actor,
            critic,
            clip_epsilon=hp["clip"],
            entropy_bonus=entropy,
            entropy_coeff=hp["entropy_coeff"] if entropy else None,
            critic_coeff=hp["critic_coeff"],
            loss_critic_type="l2",
            normalize_advantage=True,
            functional=False,
        )
        self.loss.make_value_estimator(ValueEstimators.GAE, gamma=hp["gamma"], lmbda=hp["gae_lambda"])
        self.optim = torch.optim.Adam(self.loss.parameters(), lr=hp["lr"], eps=1e-5)
        self.collector = _collector(env, self.actor, hp["num_envs"] * hp["steps_per_env"])
        self.hp = hp

    def update(self, batch: TensorDictBase, progress: float) -> None:
        hp = self.hp
        _set_lr(self.optim, hp["lr"], hp["lr_linear"], progress)
        self.loss.clip_epsilon.fill_(hp["clip"] * (max(1.0 - progress, 0.0) if hp["clip_linear"] else 1.0))
        with torch.no_grad():
            self.loss.value_estimator(batch)
        flat = batch.reshape(-1)
        n = flat.shape[0]
        for _ in range(hp["epochs"]):
            # one full-batch minibatch (CartPole: 256 = 8 x 32) needs no shuffling
            minibatches = [flat] if hp["batch_size"] >= n else [flat[idx] for idx in torch.randperm(n).split(hp["batch_size"])]
            for mb in minibatches:
                _clip_grad_and_step(self.optim, _total(self.loss(mb)), self.loss.parameters(), hp["max_grad_norm"])


class _TorchRLMCPPO(_EpisodePipeline):
    """TorchRL's critic-free recipe: ``MCAdvantage`` group advantages, ``ClipPPOLoss(critic_network=None)``."""

    def __init__(self, env_id: str, seed: int, hp: dict[str, Any]) -> None:
        env = make_batched_env(env_id, hp["num_envs"], seed)
        env, self.actor, _ = _networks(env, hp["hidden"], critic=False)
        self.loss = ClipPPOLoss(
            self.actor, None, clip_epsilon=hp["clip"], entropy_bonus=False, normalize_advantage=False, functional=False
        )
        self.advantage = MCAdvantage(grpo_size=hp["group_size"], prompt_key="group_id", trajectory_return="sum")
        self.optim = torch.optim.Adam(self.loss.parameters(), lr=hp["lr"])
        episodes = hp["group_size"] * hp["groups_per_batch"]
        self.collector = _collector(env, self.actor, hp["num_envs"] * hp["steps_per_poll"], trajs_per_batch=episodes)
        self.groups_seen = 0
        self.hp = hp

    def update(self, batch: TensorDictBase, progress: float) -> None:
        _set_lr(self.optim, self.hp["lr"], self.hp["lr_linear"], progress)
        done = batch["next", "done"].reshape(-1)
        episode = torch.cumsum(done.long(), 0) - done.long()  # index of each step's episode in the batch
        batch["group_id"] = self.groups_seen + episode // self.hp["group_size"]
        self.groups_seen += self.hp["groups_per_batch"]
        batch = self.advantage.inv(batch)
        for _ in range(self.hp["epochs"]):
            _clip_grad_and_step(self.optim, _total(self.loss(batch)), self.loss.parameters(), self.hp["max_grad_norm"])


_PIPELINES: dict[str, type[_Pipeline]] = {
    "torchrl_grpo": _GRPO,
    "torchrl_reinforce_pgx": _ReinforcePgx,
    "torchrl_trpo": _TRPO,
    "torchrl_reinforce": _TorchRLReinforce,
    "torchrl_ppo": _TorchRLPPO,
    "torchrl_mc_ppo": _TorchRLMCPPO,
}


class _Evaluator:
    """``n_episodes`` deterministic episodes at once: one per sub-env of a batched env, each counted once."""

    def __init__(self, env_id: str, n_episodes: int, seed: int) -> None:
        self.env = make_batched_env(env_id, n_episodes, seed)
        self.n = n_episodes
        spec = gym.spec(env_id)
        self.max_steps = spec.max_episode_steps or 100_000

    @torch.no_grad()
    def __call__(self, actor: torch.nn.Module, obs_norm: VecNormV2 | None = None) -> tuple[float, float]:
        """Mean and std of the returns; ``obs_norm``: the training env's observation normalisation, applied frozen."""
        env = self.env if obs_norm is None else TransformedEnv(self.env, obs_norm.frozen_copy())
        env = _load_examples_common().with_actor_noise(env, actor)  # a gSDE actor reads its noise (unused: deterministic)
        returns = torch.zeros(self.n, dtype=torch.float64)
        finished = torch.zeros(self.n, dtype=torch.bool)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            td = env.reset()
            for _ in range(self.max_steps):
                td, td_next = env.step_and_maybe_reset(actor(td))
                returns += torch.where(finished, 0.0, td["next", "reward"].reshape(self.n).to(returns.dtype))
                finished |= td["next", "done"].reshape(self.n)
                if bool(finished.all()):
                    break
                td = td_next
        if not bool(torch.isfinite(returns).all()):  # a NaN return must not enter a results file as a number
            raise RuntimeError(
                f"the evaluation returns are not finite ({returns.tolist()}): the env got NaN actions or observations "
                "(an observation normalisation without statistics, or an actor with non-finite parameters)."
            )
        return float(returns.mean()), float(returns.std(unbiased=False))

    def close(self) -> None:
        self.env.close()


def run_torchrl(
    name: str,
    env_id: str,
    seed: int,
    budget: int,
    eval_every: int,
    n_eval_episodes: int = 10,
    stop_at: float | None = None,
    hyperparams: dict[str, Any] | None = None,
) -> Curve:
    """Train ``name`` on ``env_id`` for ``budget`` env steps (or until the eval mean reaches ``stop_at``).

    Example::

        >>> curve = run_torchrl("torchrl_grpo", "CartPole-v1", seed=0, budget=20_000, eval_every=5_000)  # doctest: +SKIP
    """
    if name not in _PIPELINES:
        raise ValueError(f"Unknown TorchRL benchmark algorithm {name!r}: use one of {', '.join(TORCHRL_ALGOS)}.")
    hp = config_for(name, env_id)
    unknown = set(hyperparams or {}) - set(hp)
    if unknown:
        raise ValueError(f"Unknown hyperparameters {sorted(unknown)} for {name}: valid ones are {sorted(hp)}.")
    hp.update(hyperparams or {})
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    warnings.filterwarnings("ignore", category=FutureWarning)
    pipeline = _PIPELINES[name](env_id, seed, hp)
    evaluator = _Evaluator(env_id, n_eval_episodes, seed + 10_000)
    curve = Curve()
    next_eval, eval_time = eval_every, 0.0
    start = time.perf_counter()
    try:
        for batch in pipeline.batches():
            frames = pipeline.frames()
            pipeline.update(batch, frames / budget)
            if frames < next_eval and frames < budget:
                continue
            eval_start = time.perf_counter()
            mean, std = evaluator(pipeline.actor, pipeline.obs_norm)
            curve.steps.append(frames)
            curve.mean.append(mean)
            curve.std.append(std)
            curve.train_time.append(eval_start - start - eval_time)
            eval_time += time.perf_counter() - eval_start
            next_eval = (frames // eval_every + 1) * eval_every
            if (stop_at is not None and mean >= stop_at) or frames >= budget:
                break
    finally:
        pipeline.close()
        evaluator.close()
    return curve


def _run_job(job: tuple[str, str, int, int, int, float | None, dict[str, Any]]) -> Curve:
    name, env_id, seed, budget, eval_every, stop_at, hyperparams = job
    return run_torchrl(name, env_id, seed, budget, eval_every, 10, stop_at, hyperparams)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("algo", choices=TORCHRL_ALGOS)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=100_000)
    parser.add_argument("--eval-every", type=int, default=2_500)
    parser.add_argument("--stop-at", type=float, default=475.0)
    parser.add_argument("--jobs", type=int, default=1, help="parallel runs")
    parser.add_argument("--curves", action="store_true", help="print every evaluation")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hyperparameter")
    args = parser.parse_args(argv)
    if held_out_seeds(args.seeds):
        parser.error(f"seeds {held_out_seeds(args.seeds)}: 100 and above are held out for the report: tune on 0-4")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    jobs = [(args.algo, args.env, s, args.budget, args.eval_every, args.stop_at, overrides) for s in args.seeds]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(args.jobs) as pool:
            curves = pool.map(_run_job, jobs, chunksize=1)
    else:
        curves = [_run_job(j) for j in jobs]
    hits = []
    for seed, c in zip(args.seeds, curves, strict=True):
        hit = next((s for s, m in zip(c.steps, c.mean, strict=True) if m >= args.stop_at), None)
        hits.append(hit if hit is not None else float("inf"))
        fps = c.steps[-1] / c.train_time[-1] if c.train_time and c.train_time[-1] > 0 else float("nan")
        print(f"seed {seed}: hit {hit}, last {c.mean[-1]:.1f} at {c.steps[-1]}, {fps:.0f} env-steps/s", flush=True)
        if args.curves:
            print("   " + " ".join(f"{s // 1000}k:{m:.0f}" for s, m in zip(c.steps, c.mean, strict=True)))
    print(
        f"{args.algo} {overrides}: median frames to {args.stop_at:g} = {statistics.median(hits)}, mean = "
        f"{sum(hits) / len(hits):.0f}"
    )


if __name__ == "__main__":
    main()
