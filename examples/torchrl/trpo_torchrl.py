"""TRPO (docs/maths.md §4) with TorchRL on CartPole-v1 or Pendulum-v1: GAE advantages, trust-region actor step, critic by Adam.

    python examples/torchrl/trpo_torchrl.py                        # the tuned CartPole settings
    python examples/torchrl/trpo_torchrl.py --env Pendulum-v1 --frames 300000 --max-kl 0.01
    python examples/torchrl/trpo_torchrl.py --backend process --workers 2

The loop below is what ``TRPOStepper`` does inside a ``torchrl.trainers.Trainer``:
``Trainer(..., optimization_stepper=TRPOStepper(loss, critic_optimizer))``. The defaults are the settings of
``benchmarks/torchrl_runner.py`` (``DEFAULTS["torchrl_trpo"]``).
"""

from __future__ import annotations

import torch
from _common import (
    EnvSteps,
    Progress,
    episode_returns,
    make_actor,
    make_collector,
    make_critic,
    make_env,
    parser,
    scalars,
    setup,
)

from torchrl_pg_extras import TRPOLoss, TRPOStepper


def main(argv: list[str] | None = None) -> float:
    p = parser("TRPO", frames=200_000, envs=16)
    p.add_argument("--steps-per-env", type=int, default=64, help="frames per batch = num_envs * steps_per_env")
    p.add_argument("--max-kl", type=float, default=0.05)
    p.add_argument("--gamma", type=float, default=None, help="default 0.99 (CartPole), 0.9 (Pendulum)")
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--cg-damping", type=float, default=0.1)
    p.add_argument("--critic-lr", type=float, default=1e-3)
    p.add_argument("--critic-updates", type=int, default=10)
    p.add_argument("--critic-batch-size", type=int, default=128)
    args = p.parse_args(argv)
    gamma = args.gamma if args.gamma is not None else (0.9 if args.env == "Pendulum-v1" else 0.99)
    device = setup(args)

    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device)
    critic = make_critic(probe, args.hidden, device)
    probe.close()
    loss = TRPOLoss(actor, critic, max_kl=args.max_kl, cg_damping=args.cg_damping)
    loss.make_value_estimator(gamma=gamma, lmbda=args.gae_lambda)  # the default GAE
    stepper = TRPOStepper(
        loss,
        torch.optim.Adam(loss.critic_parameters(), lr=args.critic_lr),
        critic_updates=args.critic_updates,
        critic_batch_size=args.critic_batch_size,
    )
    collector = make_collector(args, actor, frames_per_batch=args.num_envs * args.steps_per_env, device=device)
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
