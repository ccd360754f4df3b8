"""REINFORCE (docs/maths.md §2) / REINFORCE with baseline (docs/maths.md §3) with TorchRL on CartPole-v1 or Pendulum-v1.

    python examples/torchrl/reinforce_torchrl.py                       # the tuned CartPole settings, no critic
    python examples/torchrl/reinforce_torchrl.py --baseline            # with a learned baseline
    python examples/torchrl/reinforce_torchrl.py --env Pendulum-v1 --baseline --gamma 0.9 --lr 1e-3 --frames 500000
    python examples/torchrl/reinforce_torchrl.py --backend process --workers 2

Monte-Carlo returns need whole episodes: the collector yields complete trajectories
(``Collector(trajs_per_batch=...)``), the loss computes ``G_t`` with ``MonteCarloEstimator``. The defaults are the
tuned settings of ``benchmarks/torchrl_runner.py`` (``DEFAULTS["torchrl_reinforce_pgx"]``).
"""

from __future__ import annotations

import torch
from _common import Progress, episode_returns, make_actor, make_collector, make_critic, make_env, parser, scalars, setup

from torchrl_pg_extras import REINFORCELoss


def env_steps(collector) -> int:
    """Env steps the collector took (trajectory batches hold only finished episodes): its public state's frame count."""
    state = collector.state_dict()
    if "frames" in state:
        return int(state["frames"])
    return sum(int(w["frames"]) for w in state.values() if isinstance(w, dict) and "frames" in w)  # one per worker


def main(argv: list[str] | None = None) -> float:
    p = parser("REINFORCE", frames=100_000, envs=16)
    p.add_argument("--baseline", action="store_true", help="learn a critic V(s) as baseline (docs/maths.md §3)")
    p.add_argument("--episodes-per-batch", type=int, default=4)
    p.add_argument("--steps-per-poll", type=int, default=8, help="collector frames per poll = num_envs * this")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--critic-coeff", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    args = p.parse_args(argv)
    device = setup(args)

    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device)
    critic = make_critic(probe, args.hidden, device) if args.baseline else None
    probe.close()
    loss = REINFORCELoss(actor, critic, normalize_advantage=True, critic_coeff=args.critic_coeff)
    loss.make_value_estimator(gamma=args.gamma)  # the default Monte-Carlo estimator, with the critic as baseline
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr)
    collector = make_collector(
        args,
        actor,
        frames_per_batch=args.num_envs * args.steps_per_poll,
        trajs_per_batch=args.episodes_per_batch,
        device=device,
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
        progress.update(env_steps(collector), episode_returns(batch), scalars(out))
        if progress.done():
            break
    collector.shutdown()
    progress.close()
    return progress.mean_return


if __name__ == "__main__":
    main()
