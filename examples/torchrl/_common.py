"""Shared pieces of the TorchRL examples: env, networks, collector, logger, command line.

Nothing here is algorithm-specific; see ``reinforce_torchrl.py``, ``trpo_torchrl.py`` and ``grpo_torchrl.py``. The
hyperparameters come from the config files (``torchrl_configs/<algo>.yaml``, ``torchrl_pg_extras.configs``): the
``default`` entry, then the env's, then the command line, as ``--flag value`` or as TorchRL sota-implementations'
``key=value``. Every budget (``frames``) and progress figure counts env steps taken (the frames the collector stepped,
including episodes still running), the unit of SB3's ``num_timesteps``.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterable

import gymnasium as gym
import torch
from gymnasium.vector import AutoresetMode
from tensordict import TensorDictBase
from tensordict.nn import AddStateIndependentNormalScale, NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import EnvBase, GymWrapper, RewardSum, TransformedEnv, VecNorm, gSDENoise
from torchrl.modules import MLP, IndependentNormal, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.modules.models.exploration import gSDEModule
from torchrl.record.loggers import Logger, get_logger
from torchrl_pg_extras.configs import envs as config_envs
from torchrl_pg_extras.configs import load_config, parse_overrides

from torchrl_pg_extras import ID_NAMESPACE, GroupedEnv

BACKENDS = ("serial", "process", "ray")
#: the ``continuous`` distributions of :func:`make_actor` (the configs' ``continuous`` key)
CONTINUOUS = ("tanh_normal", "normal", "gsde")


def parser(algo: str, frames: int, envs: int) -> argparse.ArgumentParser:
    """The flags every example understands (their defaults are replaced by the config's in :func:`parse_args`)."""
    p = argparse.ArgumentParser(
        description=f"{algo} with TorchRL (pg-extras). Hyperparameters: torchrl_configs/, overridden by --flags or key=value.",
    )
    p.add_argument("--env", default="CartPole-v1", help="an env with an entry in the config file (env=... works too)")
    p.add_argument("--frames", type=int, default=frames, help="total environment steps")
    p.add_argument("--num-envs", type=int, default=envs, help="sub-envs per collector worker (gymnasium vector env)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument(
        "--normalize-obs", action=argparse.BooleanOptionalAction, default=False, help="running observation normalisation"
    )
    p.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    p.add_argument("--logger", default="csv", choices=["csv", "tensorboard", "wandb", "none"])
    p.add_argument("--log-dir", default="logs/torchrl")
    p.add_argument(
        "--backend",
        default="serial",
        choices=BACKENDS,
        help="serial: one Collector in this process; process: Collector(backend='process') with --workers worker "
        "processes (a MultiSyncCollector); ray: the same with Ray actors (needs `pip install ray`)",
    )
    p.add_argument("--workers", type=int, default=2, help="collector workers for --backend process / ray")
    p.add_argument(
        "--mp-start-method",
        default=None,
        choices=["spawn", "fork", "forkserver"],
        help="multiprocessing start method for --backend process (TorchRL's default: spawn)",
    )
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("--target-return", type=float, default=None, help="stop once the mean episode return reaches it")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for these small MLPs)")
    return p


def parse_args(p: argparse.ArgumentParser, name: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line over ``torchrl_configs/<name>.yaml``'s entry for the env.

    ``--flag value`` and ``key=value`` both set an option (``key`` is the config's name, e.g. ``clip_epsilon=0.3``, or
    a flag's, e.g. ``seed=1``; ``key=value`` wins when both are given). A key that is neither is refused with the list.

    Example::

        python examples/torchrl/grpo_torchrl.py env=Pendulum-v1 lr=3e-4 frames=200000
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pairs = [t for t in argv if "=" in t and not t.startswith("-")]
    flags = [t for t in argv if t not in pairs]
    try:
        overrides = parse_overrides(pairs)
        env = overrides.pop("env", None) or p.parse_known_args(flags)[0].env
        options = vars(p.parse_known_args([])[0])  # every option with its flag default
        keys = list(load_config(name, config_envs(name)[0]))
        unknown = [k for k in overrides if k not in keys and k not in options]
        if unknown:
            close = difflib.get_close_matches(unknown[0], [*keys, *options], n=1)
            raise ValueError(
                f"{unknown[0]!r}{f' (did you mean {close[0]!r}?)' if close else ''} is neither a key of "
                f"torchrl_configs/{name}.yaml ({', '.join(keys)}) nor an option "
                f"({', '.join(k for k in options if k not in keys)})."
            )
        config = load_config(name, env, {k: v for k, v in overrides.items() if k in keys})
    except ValueError as exc:
        p.error(str(exc))
    without_flag = [k for k in config if k not in options]
    if without_flag:  # a config key the script does not take: the example's bug, not the user's
        raise RuntimeError(f"torchrl_configs/{name}.yaml keys without a flag in this script: {without_flag}")
    p.set_defaults(**config, env=env)
    args = p.parse_args(flags)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def set_lr(optim: torch.optim.Optimizer, args, progress: float) -> None:
    """``args.lr``, decayed linearly to 0 over ``args.frames`` when ``args.lr_linear`` (RL Zoo's ``lin_<lr>``)."""
    for group in optim.param_groups:
        group["lr"] = args.lr * (1.0 - progress if args.lr_linear else 1.0)


def minibatches(batch: TensorDictBase, size: int | None) -> list[TensorDictBase]:
    """The batch's steps in shuffled minibatches of ``size`` (the whole batch when ``size`` is None or not smaller):
    for a token-level aggregation (``bnpo``), any subset of steps gives an unbiased loss."""
    n = batch.numel()
    if size is None or size >= n:
        return [batch]
    flat = batch.reshape(-1)
    return [flat[idx] for idx in torch.randperm(n, device=batch.device).split(size)]


def gradient_step(optim: torch.optim.Optimizer, out: TensorDictBase, params, max_grad_norm: float | None) -> None:
    """One optimizer step on the sum of the ``loss_*`` entries of a loss module's output (clipped unless 0 / None)."""
    total = sum(v for k, v in out.items() if k.startswith("loss_"))
    optim.zero_grad()
    total.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm)
    optim.step()


def setup(args) -> torch.device:
    """Seed, CPU threads and device."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    return device_of(args.device)


def device_of(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_env(
    env_name: str,
    num_envs: int,
    seed: int,
    group_size: int | None = None,
    worker: int = 0,
    greedy_member: bool = False,
    normalize_obs: bool = False,
    gsde_state_dim: int | None = None,
) -> EnvBase:
    """A gymnasium vector env (sync, ``AutoresetMode.DISABLED``: TorchRL drives the resets) with episode returns.

    ``group_size`` wraps it in :class:`~torchrl_pg_extras.GroupedEnv` (GRPO groups of same-seed episodes, ids in the
    namespace of collector worker ``worker``; ``greedy_member``: ReMax's extra greedy member per group).
    ``normalize_obs``: TorchRL's ``VecNorm`` on the observation, one running mean and variance over the sub-envs (as
    SB3's ``VecNormalize(norm_reward=False)``; with several collector workers, each worker keeps its own).
    ``gsde_state_dim``: the exploration noise of a ``continuous="gsde"`` actor (:func:`gsde_noise`).
    """
    vec = gym.make_vec(
        env_name, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env: EnvBase = GymWrapper(vec, categorical_action_encoding=True)
    if group_size is not None:
        env = GroupedEnv(env, group_size, seed=seed, id_offset=worker * ID_NAMESPACE, greedy_member=greedy_member)
    env = TransformedEnv(env, RewardSum())
    if normalize_obs:
        env.append_transform(obs_normalization())
    if gsde_state_dim is not None:
        env.append_transform(gsde_noise(env, gsde_state_dim))
    env.set_seed(seed)
    return env


def gsde_noise(env: EnvBase, state_dim: int) -> gSDENoise:
    """TorchRL's ``gSDENoise`` for a ``continuous="gsde"`` actor on ``env``: one noise matrix ``[n_act, state_dim]`` per
    sub-env, drawn at each of its resets and held for the episode (SB3's gSDE with ``sde_sample_freq=-1``)."""
    return gSDENoise(state_dim=state_dim, action_dim=env.action_spec.shape[-1], shape=env.batch_size)


def with_actor_noise(env: EnvBase, actor: nn.Module) -> EnvBase:
    """``env`` with the :func:`gsde_noise` that ``actor`` reads if it is a ``continuous="gsde"`` actor, else ``env``."""
    for module in actor.modules():
        if isinstance(module, gSDEModule):
            noise = gsde_noise(env, module.state_dim)
            if isinstance(env, TransformedEnv):  # appended, not nested: TorchRL unwraps a nested TransformedEnv into
                env.append_transform(noise)  # copies of its transforms (a VecNorm held elsewhere would stop updating)
                return env
            return TransformedEnv(env, noise)
    return env


class _Detach(nn.Module):
    """The gSDE features without their gradient (SB3's ``learn_features=False``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()


def obs_normalization() -> VecNorm:
    """TorchRL's ``VecNorm`` on the observation with one running mean and variance over all sub-envs (SB3's
    ``VecNormalize(norm_reward=False)``), the ``normalize_obs`` of the configs."""
    return VecNorm(in_keys=["observation"], new_api=True, decay=0.99999, reduce_batch_dims=True)


def env_factories(args, group_size: int | None = None, greedy_member: bool = False) -> list[Callable[[], EnvBase]]:
    """One picklable env constructor per collector worker, each with its own seed and group-id namespace."""
    workers = 1 if args.backend == "serial" else args.workers
    return [
        functools.partial(
            make_env,
            args.env,
            args.num_envs,
            args.seed + 1000 * i,
            group_size,
            i,
            greedy_member,
            args.normalize_obs,
            args.hidden if getattr(args, "continuous", None) == "gsde" else None,
        )
        for i in range(workers)
    ]


def make_actor(env: EnvBase, hidden: int, device: torch.device, continuous: str = "tanh_normal") -> ProbabilisticActor:
    """Categorical policy for discrete actions; for continuous ones ``continuous`` picks the distribution:
    ``"tanh_normal"`` (TanhNormal scaled to the action bounds, state-dependent scale), ``"normal"`` (a diagonal
    Gaussian with a state-independent sigma that starts at half the action range, the env clipping the action; the
    SB3 critic-free policies' default, docs/design.md#sigma) or ``"gsde"`` (SB3's ``use_sde=True``: the action is
    ``mu(s) + (sigma * eps) h(s)`` with the last hidden layer's features ``h`` and a noise ``eps`` held for the episode,
    TorchRL's ``gSDEModule``; its log-probability is that of ``Normal(mu, ||sigma h||)``; the env needs
    :func:`gsde_noise`, which ``make_env(gsde_state_dim=hidden)`` adds)."""
    n_obs = env.observation_spec_unbatched["observation"].shape[-1]
    spec = env.action_spec_unbatched
    if spec.domain == "discrete":
        net = MLP(in_features=n_obs, out_features=int(spec.space.n), num_cells=[hidden, hidden], activation_class=nn.Tanh)
        module = TensorDictModule(net, ["observation"], ["logits"])
        actor = ProbabilisticActor(
            module, in_keys=["logits"], distribution_class=torch.distributions.Categorical, return_log_prob=True, spec=spec
        )
        return actor.to(device)
    n_act = spec.shape[-1]
    if continuous == "normal":
        scale = AddStateIndependentNormalScale(n_act)
        half_range = (spec.space.high - spec.space.low).to(torch.get_default_dtype()) / 2
        with torch.no_grad():  # exp mapping: the parameter is log(sigma)
            scale.state_independent_scale.copy_(half_range.log())
        net = nn.Sequential(
            MLP(in_features=n_obs, out_features=n_act, num_cells=[hidden, hidden], activation_class=nn.Tanh), scale
        )
        module = TensorDictModule(net, ["observation"], ["loc", "scale"])
        actor = ProbabilisticActor(
            module, in_keys=["loc", "scale"], distribution_class=IndependentNormal, return_log_prob=True, spec=spec
        )
        return actor.to(device)
    if continuous == "gsde":  # state-dependent exploration (Raffin et al. 2022), TorchRL's gSDEModule
        features = MLP(in_features=n_obs, out_features=hidden, num_cells=[hidden], activation_class=nn.Tanh)
        net = TensorDictSequential(
            TensorDictModule(nn.Sequential(features, nn.Tanh()), ["observation"], ["gsde_features"]),
            TensorDictModule(nn.Linear(hidden, n_act), ["gsde_features"], ["gsde_mean"]),
            TensorDictModule(_Detach(), ["gsde_features"], ["gsde_state"]),
            TensorDictModule(
                gSDEModule(n_act, hidden, sigma_init=None),
                ["gsde_mean", "gsde_state", "_eps_gSDE"],
                ["loc", "scale", "action", "_eps_gSDE"],
            ),
        )
        actor = ProbabilisticActor(
            net, in_keys=["loc", "scale"], distribution_class=IndependentNormal, return_log_prob=True, spec=spec
        )
        return actor.to(device)
    if continuous != "tanh_normal":
        raise ValueError(f"continuous={continuous!r}: use one of {', '.join(CONTINUOUS)}.")
    net = nn.Sequential(
        MLP(in_features=n_obs, out_features=2 * n_act, num_cells=[hidden, hidden], activation_class=nn.Tanh),
        NormalParamExtractor(),
    )
    module = TensorDictModule(net, ["observation"], ["loc", "scale"])
    bounds = {"low": spec.space.low.to(device), "high": spec.space.high.to(device)}
    actor = ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs=bounds,
        return_log_prob=True,
        spec=spec,
    )
    return actor.to(device)


def make_critic(env: EnvBase, hidden: int, device: torch.device) -> ValueOperator:
    n_obs = env.observation_spec_unbatched["observation"].shape[-1]
    net = MLP(in_features=n_obs, out_features=1, num_cells=[hidden, hidden], activation_class=nn.Tanh)
    return ValueOperator(net, in_keys=["observation"]).to(device)


def make_collector(
    args,
    policy,
    frames_per_batch: int,
    group_size: int | None = None,
    trajs_per_batch: int | None = None,
    device: torch.device | None = None,
    greedy_member: bool = False,
):
    """A ``Collector`` on ``--backend``: in this process, or ``--workers`` worker processes / Ray actors.

    Every backend is the same ``Collector`` constructor (``backend="process"`` builds a ``MultiSyncCollector``,
    ``backend="ray"`` runs the workers as Ray actors); everything downstream (``GroupBatcher``, the advantage modules,
    the losses) only sees the yielded TensorDicts.
    """
    kwargs = dict(
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        auto_register_policy_transforms=False,
        policy_device=device,
        storing_device=device,
        env_device="cpu",
    )
    if trajs_per_batch is not None:
        kwargs.update(trajs_per_batch=trajs_per_batch, traj_format="padded")
    factories = env_factories(args, group_size, greedy_member)
    if args.backend == "serial":
        return Collector(factories[0](), policy, **kwargs)
    if args.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as err:
            raise SystemExit('--backend ray needs Ray: pip install -e ".[ray]"') from err
        # RayCollector takes the per-worker Collector's own options through collector_kwargs
        collector_kwargs = {"auto_register_policy_transforms": kwargs.pop("auto_register_policy_transforms")}
        kwargs["total_frames"] = 2**62  # RayCollector stops at total_frames (-1 would yield nothing): the loop stops it
        return Collector(
            factories,
            policy,
            num_collectors=args.workers,
            backend="ray",
            sync=True,
            ray_init_config=ray_init_config(args.workers),
            remote_configs={"num_cpus": 1, "memory": 1024**3},
            collector_kwargs=collector_kwargs,
            **kwargs,
        )
    if args.mp_start_method is not None:
        mp.set_start_method(args.mp_start_method, force=True)
    return Collector(factories, policy, num_collectors=args.workers, backend=args.backend, sync=True, **kwargs)


def ray_init_config(num_cpus: int) -> dict:
    """``ray.init`` arguments: the cluster at ``$RAY_ADDRESS`` if set, else a local one with ``num_cpus`` CPUs.

    The local instance keeps Ray's token authentication and starts no dashboard. To use an existing cluster, set
    ``RAY_ADDRESS=ray://HOST:10001`` (or call ``ray.init(address=...)`` before building the collector).
    """
    # the workers unpickle env constructors defined in this folder: put it on their path
    here = os.path.dirname(os.path.abspath(__file__))
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        return {"address": address, "runtime_env": runtime_env}
    return {"num_cpus": num_cpus, "include_dashboard": False, "log_to_driver": False, "runtime_env": runtime_env}


def make_logger(args, algo: str) -> Logger | None:
    if args.logger == "none":
        return None
    name = f"{algo}_{args.env}_seed{args.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    return get_logger(args.logger, logger_name=args.log_dir, experiment_name=name)


def episode_returns(batch: TensorDictBase) -> torch.Tensor:
    """Returns of the episodes that end in ``batch`` (from :class:`~torchrl.envs.RewardSum`).

    Throw-away episodes of ``GroupedEnv(schedule="lockstep")`` (``episode_id`` -1) are left out.
    """
    done = batch["next", "done"].squeeze(-1)
    mask = batch.get(("collector", "mask"), default=None)
    if mask is not None:
        done = done & mask
    episode = batch.get("episode_id", default=None)
    if episode is not None:
        done = done & (episode.squeeze(-1) >= 0)
    return batch["next", "episode_reward"].squeeze(-1)[done]


class Progress:
    """A tqdm bar over env steps that also logs scalars to the TorchRL logger."""

    def __init__(self, args, algo: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=args.frames, disable=args.no_progress, desc=f"{algo} {args.env}", unit="step")
        self.logger = make_logger(args, algo)
        self.env_steps = 0
        self.recent: list[float] = []
        self.target = args.target_return
        self.start = time.time()

    def update(self, env_steps: int, returns: torch.Tensor, metrics: dict[str, float]) -> None:
        """``env_steps``: the env steps taken so far (a running total, e.g. ``GroupBatcher.env_steps``)."""
        self.bar.update(env_steps - self.env_steps)
        self.env_steps = env_steps
        if returns.numel():
            self.recent = (self.recent + returns.tolist())[-50:]
        steps_per_s = self.env_steps / max(time.time() - self.start, 1e-9)
        scalars = {"train/episode_return": self.mean_return, "train/env_steps_per_s": steps_per_s, **metrics}
        if self.logger is not None:
            for key, value in scalars.items():
                self.logger.log_scalar(key, float(value), step=self.env_steps)
        self.bar.set_postfix(ret=f"{self.mean_return:.1f}")

    @property
    def mean_return(self) -> float:
        return sum(self.recent) / max(len(self.recent), 1)

    @property
    def progress(self) -> float:
        """Fraction of the budget (``--frames``) used, for linear schedules."""
        return min(self.env_steps / max(self.bar.total, 1), 1.0)

    def done(self) -> bool:
        reached = self.target is not None and len(self.recent) >= 10 and self.mean_return >= self.target
        return reached or self.env_steps >= self.bar.total

    def close(self) -> None:
        self.bar.close()
        print(
            f"env_steps={self.env_steps} mean_return(last 50 episodes)={self.mean_return:.1f} "
            f"time={time.time() - self.start:.1f}s"
        )


class EnvSteps:
    """Counts the env steps of a fixed-frame collector (every stepped frame is in exactly one batch)."""

    def __init__(self, collector) -> None:
        self.collector = collector
        self.env_steps = 0

    def __iter__(self):
        for batch in self.collector:
            self.env_steps += batch.numel()
            yield batch


def scalars(td: TensorDictBase, keys: Iterable[str] | None = None) -> dict[str, float]:
    """Detached scalar entries of a loss output, prefixed with ``train/``."""
    return {f"train/{k}": float(v.detach()) for k, v in td.items() if v.numel() == 1 and (keys is None or k in keys)}
