"""REINFORCE (docs/maths.md §2) / REINFORCE with baseline (docs/maths.md §3) with TorchRL.

    python examples/torchrl/reinforce_torchrl.py                       # the tuned CartPole settings, no critic
    python examples/torchrl/reinforce_torchrl.py --baseline            # with a learned baseline
    python examples/torchrl/reinforce_torchrl.py env=Pendulum-v1 frames=500000   # torchrl_configs/reinforce.yaml
    python examples/torchrl/reinforce_torchrl.py --backend process --workers 2

Monte-Carlo returns need whole episodes: the collector yields complete trajectories
(``Collector(trajs_per_batch=...)``), the loss computes ``G_t`` with ``MonteCarloEstimator``. The settings are
``torchrl_configs/reinforce.yaml``'s entry for the env (which the benchmark runs too), overridden by ``--flags`` or
``key=value``.
"""

from __future__ import annotations

import argparse

import torch
from _common import (
    CONTINUOUS,
    Progress,
    episode_returns,
    gradient_step,
    make_actor,
    make_collector,
    make_critic,
    make_env,
    parse_args,
    parser,
    scalars,
    set_lr,
    setup,
)

from torchrl_pg_extras import REINFORCELoss


def env_steps(collector) -> int:
    """Env steps the collector took (trajectory batches hold only finished episodes): its public state's frame count."""
    state = collector.state_dict()
    if "frames" in state:
        return int(state["frames"])
    return sum(int(w["frames"]) for w in state.values() if isinstance(w, dict) and "frames" in w)  # one per worker


def main(argv: list[str] | None = None) -> float:
    p = parser("REINFORCE", frames=100_000, envs=16)
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, help="learn a critic V(s) as baseline (§3)")
    p.add_argument("--trajs-per-batch", "--episodes-per-batch", type=int, help="complete episodes per update")
    p.add_argument("--frames-per-batch", type=int, help="collector frames per poll (all envs together)")
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-linear", action=argparse.BooleanOptionalAction, help="linear decay of the lr to 0 over frames")
    p.add_argument("--gamma", type=float)
    p.add_argument("--critic-coeff", type=float)
    p.add_argument("--max-grad-norm", type=float, help="0: no clipping")
    p.add_argument("--continuous", choices=CONTINUOUS, help="the continuous-action distribution")
    args = parse_args(p, "reinforce", argv)
    device = setup(args)

    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device, args.continuous)
    critic = make_critic(probe, args.hidden, device) if args.baseline else None
    probe.close()
    loss = REINFORCELoss(actor, critic, normalize_advantage=True, critic_coeff=args.critic_coeff)
    loss.make_value_estimator(gamma=args.gamma)  # the default Monte-Carlo estimator, with the critic as baseline
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr)
    collector = make_collector(
        args,
        actor,
        frames_per_batch=args.frames_per_batch,
        trajs_per_batch=args.trajs_per_batch,
        device=device,
    )
    progress = Progress(args, "reinforce")
    for batch in collector:
        set_lr(optim, args, progress.progress)
        out = loss(batch.to(device))
        gradient_step(optim, out, loss.parameters(), args.max_grad_norm)
        collector.update_policy_weights_()
        progress.update(env_steps(collector), episode_returns(batch), scalars(out))
        if progress.done():
            break
    collector.shutdown()
    progress.close()
    return progress.mean_return


if __name__ == "__main__":
    main()
