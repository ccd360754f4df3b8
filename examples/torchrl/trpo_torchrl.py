"""TRPO (docs/maths.md §4) with TorchRL: GAE advantages, trust-region actor step, critic by Adam.

    python examples/torchrl/trpo_torchrl.py                        # the tuned CartPole settings
    python examples/torchrl/trpo_torchrl.py env=Pendulum-v1 frames=300000     # torchrl_configs/trpo.yaml
    python examples/torchrl/trpo_torchrl.py --backend process --workers 2

The loop below is what ``TRPOStepper`` does inside a ``torchrl.trainers.Trainer``:
``Trainer(..., optimization_stepper=TRPOStepper(loss, critic_optimizer))``. The settings are
``torchrl_configs/trpo.yaml``'s entry for the env (which the benchmark runs too), overridden by ``--flags`` or
``key=value``.
"""

from __future__ import annotations

import torch
from _common import (
    CONTINUOUS,
    EnvSteps,
    Progress,
    episode_returns,
    make_actor,
    make_collector,
    make_critic,
    make_env,
    parse_args,
    parser,
    scalars,
    setup,
)

from torchrl_pg_extras import TRPOLoss, TRPOStepper


def main(argv: list[str] | None = None) -> float:
    p = parser("TRPO", frames=200_000, envs=16)
    p.add_argument("--frames-per-batch", type=int, help="collector frames per batch (all envs together)")
    p.add_argument("--max-kl", type=float, help="the trust-region radius")
    p.add_argument("--gamma", type=float)
    p.add_argument("--lmbda", "--gae-lambda", type=float, help="GAE's lambda")
    p.add_argument("--cg-damping", type=float)
    p.add_argument("--critic-lr", type=float)
    p.add_argument("--critic-updates", type=int, help="passes over the batch for the critic")
    p.add_argument("--critic-batch-size", type=int)
    p.add_argument("--continuous", choices=CONTINUOUS, help="the continuous-action distribution")
    args = parse_args(p, "trpo", argv)
    device = setup(args)

    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device, args.continuous)
    critic = make_critic(probe, args.hidden, device)
    probe.close()
    loss = TRPOLoss(actor, critic, max_kl=args.max_kl, cg_damping=args.cg_damping)
    loss.make_value_estimator(gamma=args.gamma, lmbda=args.lmbda)  # the default GAE
    stepper = TRPOStepper(
        loss,
        torch.optim.Adam(loss.critic_parameters(), lr=args.critic_lr),
        critic_updates=args.critic_updates,
        critic_batch_size=args.critic_batch_size,
    )
    collector = make_collector(args, actor, frames_per_batch=args.frames_per_batch, device=device)
    batches = EnvSteps(collector)
    progress = Progress(args, "trpo")
    for batch in batches:
        batch = batch.to(device)
        metrics = stepper.step(None, batch)  # GAE, trust-region actor step, then critic passes
        collector.update_policy_weights_()
        progress.update(batches.env_steps, episode_returns(batch), scalars(metrics))
        if progress.done():
            break
    collector.shutdown()
    progress.close()
    return progress.mean_return


if __name__ == "__main__":
    main()
