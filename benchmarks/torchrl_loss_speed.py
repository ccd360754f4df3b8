"""Forward + backward time of the pg-extras TorchRL losses against TorchRL's own ClipPPOLoss and ReinforceLoss.

All losses see the same batch: ``E`` padded episodes of ``L`` steps shaped like ``Collector(trajs_per_batch=E)``
output (CartPole-sized observations and a 64x64 MLP by default), with the advantage and value target precomputed,
so that only the loss itself is timed. The losses are timed round-robin (interleaved repeats), and the median time
of each is reported with its ratio to ClipPPOLoss measured in the same run.

    python -m benchmarks.torchrl_loss_speed                 # discrete (CartPole-like) and continuous (Pendulum-like)
    python -m benchmarks.torchrl_loss_speed --episodes 32 --length 500 --repeats 50 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import ClipPPOLoss, ReinforceLoss

from torchrl_pg_extras import GRPOLoss, REINFORCELoss


def make_nets(kind: str, obs_dim: int, act_dim: int, hidden: int, device: torch.device):
    torch.manual_seed(0)
    if kind == "discrete":
        net = MLP(in_features=obs_dim, out_features=act_dim, num_cells=[hidden, hidden], activation_class=nn.Tanh)
        actor = ProbabilisticActor(
            TensorDictModule(net, ["observation"], ["logits"]),
            in_keys=["logits"],
            distribution_class=torch.distributions.Categorical,
            return_log_prob=True,
        )
    else:
        net = nn.Sequential(
            MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=[hidden, hidden], activation_class=nn.Tanh),
            NormalParamExtractor(),
        )
        actor = ProbabilisticActor(
            TensorDictModule(net, ["observation"], ["loc", "scale"]),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
            return_log_prob=True,
        )
    critic = ValueOperator(
        MLP(in_features=obs_dim, out_features=1, num_cells=[hidden, hidden], activation_class=nn.Tanh), in_keys=["observation"]
    )
    return actor.to(device), critic.to(device)


def make_batch(actor, episodes: int, length: int, obs_dim: int, device: torch.device) -> TensorDict:
    """Padded complete episodes with random lengths in [length/4, length], like a trajectory collector batch."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(length // 4, length + 1, (episodes,), generator=g)
    lengths[0] = length
    mask = torch.arange(length)[None, :] < lengths[:, None]
    done = (torch.arange(length)[None, :] == lengths[:, None] - 1)[..., None]
    td = TensorDict(
        {
            "observation": torch.randn(episodes, length, obs_dim, generator=g),
            "group_id": (torch.arange(episodes) // 4)[:, None, None].expand(episodes, length, 1).clone(),
            "advantage": torch.randn(episodes, length, 1, generator=g),
            "value_target": torch.randn(episodes, length, 1, generator=g),
            "next": {"reward": torch.ones(episodes, length, 1), "done": done, "terminated": done},
            "collector": {"mask": mask},
        },
        [episodes, length],
    ).to(device)
    with torch.no_grad():
        td = actor(td)
    return td


def loss_step(loss: nn.Module) -> Callable[[TensorDict], None]:
    def step(td: TensorDict) -> None:
        out = loss(td)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        loss.zero_grad(set_to_none=True)
        total.backward()

    return step


def build_losses(actor, critic) -> dict[str, nn.Module]:
    return {
        "ClipPPOLoss (TorchRL, with critic)": ClipPPOLoss(actor, critic, entropy_coeff=0.0),
        "ReinforceLoss (TorchRL, with critic)": ReinforceLoss(actor, critic),
        "GRPOLoss (grpo aggregation)": GRPOLoss(actor),
        "GRPOLoss (bnpo aggregation)": GRPOLoss(actor, loss_aggregation="bnpo"),
        "GRPOLoss (grpo, beta=0.04, entropy)": GRPOLoss(actor, kl_coeff=0.04, entropy_coeff=0.01),
        "REINFORCELoss (no critic)": REINFORCELoss(actor),
        "REINFORCELoss (with critic)": REINFORCELoss(actor, critic),
    }


def bench(kind: str, args, device: torch.device) -> list[dict]:
    obs_dim, act_dim = (4, 2) if kind == "discrete" else (3, 1)
    actor, critic = make_nets(kind, obs_dim, act_dim, args.hidden, device)
    td = make_batch(actor, args.episodes, args.length, obs_dim, device)
    steps = {name: loss_step(loss) for name, loss in build_losses(actor, critic).items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        for step in steps.values():
            step(td)
    for _ in range(args.repeats):  # round-robin: every loss sees the same machine load
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step(td)
            sync()
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["ClipPPOLoss (TorchRL, with critic)"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append({"kind": kind, "loss": name, "median_ms": 1e3 * med, "ratio_to_ClipPPOLoss": med / ref})
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--kinds", nargs="+", default=["discrete", "continuous"], choices=["discrete", "continuous"])
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [row for kind in args.kinds for row in bench(kind, args, device)]
    steps = args.episodes * args.length
    print(
        f"batch: {args.episodes} episodes x {args.length} steps (~{steps} padded steps), MLP {args.hidden}x{args.hidden}, "
        f"device={device}, threads={args.threads}, {args.repeats} interleaved repeats (median)"
    )
    print("| actions | loss | forward+backward (ms) | vs ClipPPOLoss |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['loss']} | {r['median_ms']:.2f} | {r['ratio_to_ClipPPOLoss']:.2f}x |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
