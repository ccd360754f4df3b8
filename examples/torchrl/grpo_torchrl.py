"""GRPO (docs/maths.md#6-grpo) for control with TorchRL: no critic, same-seed groups.

    python examples/torchrl/grpo_torchrl.py                       # the tuned CartPole settings (reaches 475)
    python examples/torchrl/grpo_torchrl.py env=Pendulum-v1       # the Pendulum recipe (torchrl_configs/grpo.yaml)
    python examples/torchrl/grpo_torchrl.py env=Pendulum-v1 lr=3e-4 frames=200000   # key=value overrides
    python examples/torchrl/grpo_torchrl.py --clip-epsilon-high 0.28 --loss-aggregation dapo   # DAPO flavour
    python examples/torchrl/grpo_torchrl.py --dynamic-sampling --keep-return-bounds 20 none  # DAPO dynamic sampling
    python examples/torchrl/grpo_torchrl.py --importance-sampling-level sequence   # GSPO
    python examples/torchrl/grpo_torchrl.py --top-entropy-quantile 0.2 --mask-truncated-completions  # TRL's masks
    python examples/torchrl/grpo_torchrl.py --backend process --workers 2

``GroupedEnv`` hands each sub-env that resets the next member of a group (the core's ``GroupScheduler``), with the
group's seed in that same reset; ``GroupBatcher`` turns the collector's steps into batches of whole groups and counts
env steps and policy versions; ``GroupRelativeAdvantage`` computes the group-relative advantages; ``GRPOLoss`` does
the rest. The settings are ``torchrl_configs/grpo.yaml``'s entry for the env (which the benchmark runs too),
overridden by ``--flags`` or ``key=value``; the variants (docs/maths.md#12-variants) default to plain GRPO.
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
    make_env,
    minibatches,
    parse_args,
    parser,
    scalars,
    set_lr,
    setup,
)

from torchrl_pg_extras import GreedyMemberPolicy, GroupBatcher, GroupRelativeAdvantage, GRPOLoss


def _bound(text: str) -> float | None:
    """A ``--keep-return-bounds`` end: a number, or ``none`` (unbounded)."""
    return None if text.lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> float:
    p = parser("GRPO", frames=100_000, envs=16)
    p.add_argument("--group-size", type=int, help="episodes per group (same reset seed)")
    p.add_argument("--groups-per-batch", type=int, help="whole groups per update")
    p.add_argument("--frames-per-batch", type=int, help="collector frames per batch (all envs together)")
    p.add_argument("--epochs", type=int, help="passes over each batch")
    p.add_argument(
        "--batch-size",
        type=int,
        help="minibatch of steps per gradient step (default: the batch; for the token-level aggregation bnpo)",
    )
    p.add_argument(
        "--continuous", choices=CONTINUOUS,
        help="continuous actions: TanhNormal, a Gaussian with sigma starting at half the action range, or gSDE",
    )  # fmt: skip
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-linear", action=argparse.BooleanOptionalAction, help="linear decay of the lr to 0 over frames")
    p.add_argument("--constant-lr", dest="lr_linear", action="store_false", help="same as --no-lr-linear")
    # the loss's own names (GRPOLoss(clip_epsilon=..., clip_epsilon_high=..., kl_coeff=...)); the old flags still work
    p.add_argument("--clip-epsilon", "--clip", type=float)
    p.add_argument("--clip-epsilon-high", "--clip-high", type=float, help="DAPO clip-higher (e.g. 0.28)")
    p.add_argument("--kl-coeff", "--beta", type=float, help="weight of the k3 KL to the reference policy")
    p.add_argument("--ref-update-interval", type=int, help="refresh pi_ref every N updates")
    p.add_argument("--entropy-coeff", type=float)
    p.add_argument(
        "--mode",
        choices=["outcome", "process", "return_to_go", "remax"],
        help="remax: one extra greedy member per group, its return is the baseline",
    )
    p.add_argument("--scale", choices=["group", "batch", "none"])
    p.add_argument("--rloo", action="store_true")
    p.add_argument("--gamma", type=float)
    p.add_argument("--loss-aggregation", choices=["grpo", "bnpo", "dapo", "dr_grpo"])
    p.add_argument("--max-grad-norm", type=float, help="0: no clipping")
    p.add_argument("--max-policy-lag", type=int, help="drop groups spanning more policy versions")
    # the variants of docs/maths.md#12-variants (TRL / DAPO names)
    p.add_argument("--importance-sampling-level", choices=["token", "sequence"], help="sequence: GSPO")
    p.add_argument("--mask-truncated-completions", action="store_true", help="truncated episodes leave the loss")
    p.add_argument("--top-entropy-quantile", type=float, help="policy-gradient term on the top fraction")
    p.add_argument("--dynamic-sampling", action="store_true", help="DAPO: collect until every group has a signal")
    p.add_argument(
        "--keep-return-bounds", nargs=2, type=_bound, metavar=("LOW", "HIGH"),
        help="DAPO: also drop the groups whose mean return is outside [LOW, HIGH] ('none': unbounded)",
    )  # fmt: skip
    args = parse_args(p, "grpo", argv)
    device = setup(args)

    # ALGO LOGIC: networks, loss, advantage module
    probe = make_env(args.env, 1, args.seed)
    actor = make_actor(probe, args.hidden, device, args.continuous)
    probe.close()
    loss = GRPOLoss(
        actor,
        clip_epsilon=args.clip_epsilon,
        clip_epsilon_high=args.clip_epsilon_high,
        kl_coeff=args.kl_coeff,
        entropy_coeff=args.entropy_coeff,
        loss_aggregation=args.loss_aggregation,
        importance_sampling_level=args.importance_sampling_level,
        mask_truncated_completions=args.mask_truncated_completions,
        top_entropy_quantile=args.top_entropy_quantile,
    )
    advantage = GroupRelativeAdvantage(args.group_size, mode=args.mode, scale=args.scale, rloo=args.rloo, gamma=args.gamma)
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr)

    # ALGO LOGIC: collection of whole groups
    remax = args.mode == "remax"  # the greedy member acts with the deterministic action (GreedyMemberPolicy)
    collector = make_collector(
        args,
        GreedyMemberPolicy(actor) if remax else actor,
        frames_per_batch=args.frames_per_batch,
        group_size=args.group_size,
        device=device,
        greedy_member=remax,
    )
    bounds = None if args.keep_return_bounds is None else tuple(args.keep_return_bounds)
    batches = GroupBatcher(  # dynamic sampling: hold back the groups without a signal, keep collecting
        collector,
        args.group_size,
        args.groups_per_batch,
        max_policy_lag=args.max_policy_lag,
        dynamic_sampling=args.dynamic_sampling,
        keep_return_bounds=bounds,
        gamma=args.gamma,
        greedy_member=remax,
    )
    progress = Progress(args, "grpo")
    updates = 0
    for batch in batches:  # each batch requested after a yield is one policy version later
        set_lr(optim, args, progress.progress)
        batch = advantage(batch.to(device))
        for _ in range(args.epochs):
            for part in minibatches(batch, args.batch_size):
                out = loss(part)
                gradient_step(optim, out, loss.parameters(), args.max_grad_norm)
                updates += 1
                if args.ref_update_interval and updates % args.ref_update_interval == 0:
                    loss.update_reference()
        collector.update_policy_weights_()
        stats = {f"train/{k}": v for k, v in {**advantage.last_stats, **batches.stats}.items()}
        progress.update(batches.env_steps, episode_returns(batch), {**scalars(out), **stats})
        if progress.done():
            break
    collector.shutdown()
    progress.close()
    return progress.mean_return


if __name__ == "__main__":
    main()
