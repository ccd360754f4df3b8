"""REINFORCE (seed 2.1) / REINFORCE with baseline (seed 2.3) with TorchRL on CartPole-v1 or Pendulum-v1.

    python examples/torchrl/reinforce_torchrl.py                       # CartPole, no critic
    python examples/torchrl/reinforce_torchrl.py --baseline            # with a learned baseline
    python examples/torchrl/reinforce_torchrl.py --env Pendulum-v1 --baseline --frames 500000
    python examples/torchrl/reinforce_torchrl.py --multiprocess 2      # two collector processes

Monte-Carlo returns need whole episodes: the collector yields complete trajectories
(``Collector(trajs_per_batch=...)``), the loss computes ``G_t`` with ``MonteCarloEstimator``.
"""

from __future__ import annotations

import torch
from _common import Progress, episode_returns, make_actor, make_collector, make_critic, make_env, parser, scalars, setup

from torchrl_pg_extras import REINFORCELoss


def main(argv: list[str] | None = None) -> float:
    p = parser("REINFORCE", frames=200_000, envs=16)
    p.add_argument("--baseline", action="store_true", help="learn a critic V(s) as baseline (seed 2.3)")
    p.add_argument("--episodes-per-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    args = p.parse_args(argv)
    device = setup(args)

    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device)
    critic = make_critic(probe, args.hidden, device) if args.baseline else None
    probe.close()
    loss = REINFORCELoss(actor, critic, gamma=args.gamma, normalize_advantage=True)
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr)
    collector = make_collector(
        args, actor, frames_per_batch=args.num_envs * 16, trajs_per_batch=args.episodes_per_batch, device=device
    )
    progress = Progress(args, "reinforce")
    for batch in collector:
        batch = batch.to(device)
        out = loss(batch)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        optim.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(loss.parameters(), args.max_grad_norm)
        optim.step()
        collector.update_policy_weights_()
        progress.update(int(batch["collector", "mask"].sum()), episode_returns(batch), scalars(out))
        if progress.done():
            break
    collector.shutdown()
    progress.close()
    return progress.mean_return


if __name__ == "__main__":
    main()
