"""GRPO (seed 2.6) for control with TorchRL on CartPole-v1 or Pendulum-v1: no critic, same-seed groups.

    python examples/torchrl/grpo_torchrl.py
    python examples/torchrl/grpo_torchrl.py --env Pendulum-v1 --frames 1000000 --lr 1e-3
    python examples/torchrl/grpo_torchrl.py --clip-high 0.28 --loss-aggregation dapo   # DAPO flavour
    python examples/torchrl/grpo_torchrl.py --multiprocess 2

``GroupReset`` makes every ``group_size`` consecutive sub-envs start their k-th episodes from the same seed;
``GroupBatcher`` turns the collector's complete trajectories into batches of whole groups;
``GroupRelativeAdvantage`` computes the group-relative advantages; ``GRPOLoss`` does the rest.
"""

from __future__ import annotations

import torch
from _common import Progress, episode_returns, make_actor, make_collector, make_env, parser, scalars, setup

from torchrl_pg_extras import GroupBatcher, GroupRelativeAdvantage, GRPOLoss


def main(argv: list[str] | None = None) -> float:
    p = parser("GRPO", frames=300_000, envs=16)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--groups-per-batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2, help="gradient steps per batch")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--clip", type=float, default=0.2)
    p.add_argument("--clip-high", type=float, default=None, help="DAPO clip-higher (e.g. 0.28)")
    p.add_argument("--beta", type=float, default=0.0, help="weight of the k3 KL to the reference policy")
    p.add_argument("--ref-update-interval", type=int, default=None, help="refresh pi_ref every N updates")
    p.add_argument("--entropy-coeff", type=float, default=0.0)
    p.add_argument("--mode", default="outcome", choices=["outcome", "process", "return_to_go"])
    p.add_argument("--scale", default="group", choices=["group", "batch", "none"])
    p.add_argument("--rloo", action="store_true")
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--loss-aggregation", default="grpo", choices=["grpo", "bnpo", "dapo", "dr_grpo"])
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.num_envs % args.group_size:
        p.error(f"--num-envs ({args.num_envs}) must be a multiple of --group-size ({args.group_size})")
    device = setup(args)

    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device)
    probe.close()
    loss = GRPOLoss(
        actor,
        clip_epsilon=args.clip,
        clip_epsilon_high=args.clip_high,
        kl_coeff=args.beta,
        entropy_coeff=args.entropy_coeff,
        loss_aggregation=args.loss_aggregation,
    )
    advantage = GroupRelativeAdvantage(args.group_size, mode=args.mode, scale=args.scale, rloo=args.rloo, gamma=args.gamma)
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr)
    collector = make_collector(
        args,
        actor,
        frames_per_batch=args.num_envs * 16,
        group_size=args.group_size,
        trajs_per_batch=args.group_size,
        device=device,
    )
    batches = GroupBatcher(collector, args.group_size, args.groups_per_batch)
    progress = Progress(args, "grpo")
    updates = 0
    for batch in batches:
        batch = advantage(batch.to(device))
        for _ in range(args.epochs):
            out = loss(batch)
            total = sum(v for k, v in out.items() if k.startswith("loss_"))
            optim.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(loss.parameters(), args.max_grad_norm)
            optim.step()
            updates += 1
            if args.ref_update_interval and updates % args.ref_update_interval == 0:
                loss.update_reference()
        collector.update_policy_weights_()
        stats = {f"train/{k}": v for k, v in advantage.last_stats.items()}
        progress.update(int(batch["collector", "mask"].sum()), episode_returns(batch), {**scalars(out), **stats})
        if progress.done():
            break
    collector.shutdown()
    progress.close()
    return progress.mean_return


if __name__ == "__main__":
    main()
