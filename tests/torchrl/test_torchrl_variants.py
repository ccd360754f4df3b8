"""The GRPO variants of docs/maths.md#12-variants in the TorchRL adapter, against the core's functions.

GSPO's sequence-level ratio, ``mask_truncated_completions`` and ``top_entropy_quantile`` (:class:`GRPOLoss`), and
dynamic sampling / ``keep_return_bounds`` (:class:`GroupRelativeAdvantage`, :class:`GroupBatcher`): each one equals
its core function on a hand-made tensordict, has the gradient it promises, rejects bad values by name, and learns
CartPole for a few thousand frames.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.envs import ExplorationType, GymWrapper, RewardSum, TransformedEnv, set_exploration_type
from torchrl.modules import MLP, ProbabilisticActor
from torchrl_helpers import discrete_actor, make_actor, padded_batch

from pg_extras import (
    aggregate_loss,
    informative_groups,
    mask_truncated_episodes,
    policy_loss,
    regularized_loss,
    returns_to_go,
    top_entropy_mask,
)
from torchrl_pg_extras import GreedyMemberPolicy, GroupBatcher, GroupedEnv, GroupRelativeAdvantage, GRPOLoss
from torchrl_pg_extras._utils import entropy_of

torch.set_num_threads(1)

KINDS = ["discrete", "continuous"]
AGGREGATIONS = ["grpo", "bnpo", "dr_grpo"]


def actor_lp(actor, td):
    """Log-prob of the stored actions under ``actor`` (independent of the losses' code)."""
    lp = actor.get_dist(td).log_prob(td["action"])
    return lp if lp.shape == td.shape else lp.sum(-1)


def row_index(td):
    """The episode of each step of a padded batch: its row, -1 on padding."""
    mask = td["collector", "mask"]
    rows = torch.arange(td.shape[0])[:, None].expand(td.shape)
    return torch.where(mask, rows, -1)


def moved(loss, scale: float = 0.05):
    """Move the actor away from its reference and behaviour policy (its parameters are shared with ``loss``'s: move
    each actor once, after building the losses to compare)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in loss.actor_parameters():
            p.add_(scale * torch.randn_like(p))
    return loss


def obs_grad(loss, td, key="loss_objective"):
    """Gradient of ``key`` with respect to every step's observation (``[E, L]``: its norm)."""
    td = td.clone()
    obs = td["observation"].clone().requires_grad_()
    td["observation"] = obs
    loss(td)[key].backward()
    return obs.grad.norm(dim=-1)


# ------------------------------------------------------------------------------------------------ GSPO (sequence)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_gspo_equals_the_core_and_the_ratio_computed_by_hand(kind, aggregation):
    actor = make_actor(kind)
    td = padded_batch(actor)
    m = td["collector", "mask"]
    loss = moved(GRPOLoss(actor, clip_epsilon=0.1, clip_epsilon_high=0.3, loss_aggregation=aggregation,
                          importance_sampling_level="sequence"))  # fmt: skip
    out = loss(td)
    lp, old, adv = actor_lp(actor, td), td["action_log_prob"], td["advantage"].squeeze(-1)
    lp, old, adv = (torch.where(m, x, torch.zeros_like(x)) for x in (lp, old, adv))
    core, _ = policy_loss(
        "ppo_clip", lp, old, adv, 0.1, 0.3, importance_sampling_level="sequence", episode_index=row_index(td)
    )
    torch.testing.assert_close(out["loss_objective"], aggregate_loss(core, m, aggregation))
    # by hand: s_i = exp(mean over the episode's valid steps of log pi - log pi_old), the same for all its steps
    s = torch.exp(((lp - old) * m).sum(1) / m.sum(1))[:, None].expand_as(lp)
    by_hand = -torch.minimum(s * adv, torch.clamp(s, 0.9, 1.3) * adv)
    torch.testing.assert_close(out["loss_objective"], aggregate_loss(by_hand, m, aggregation))
    token = GRPOLoss(actor, clip_epsilon=0.1, clip_epsilon_high=0.3, loss_aggregation=aggregation)(td)
    assert not torch.allclose(token["loss_objective"], out["loss_objective"])


def test_gspo_a_changed_log_prob_changes_only_its_episode():
    actor = discrete_actor()
    td = padded_batch(actor)
    m = td["collector", "mask"]
    loss = GRPOLoss(actor, importance_sampling_level="sequence", clip_epsilon=10.0, reduction="none")
    token = GRPOLoss(actor, clip_epsilon=10.0, reduction="none")  # no clip: every ratio shows
    before, before_token = loss(td)["loss_objective"], token(td)["loss_objective"]
    changed = td.clone()
    changed["action_log_prob"][2, 1] -= 0.5  # one step of episode 2
    after, after_token = loss(changed)["loss_objective"], token(changed)["loss_objective"]
    differs = (after - before).abs() > 1e-7
    assert torch.equal(differs, m & (torch.arange(4)[:, None] == 2))  # every step of episode 2, nothing else
    differs_token = (after_token - before_token).abs() > 1e-7
    assert differs_token.sum() == 1 and differs_token[2, 1]


def test_gspo_reads_the_episode_ids_in_padded_and_cat_layouts():
    actor = discrete_actor()
    td = padded_batch(actor)
    m = td["collector", "mask"]
    ids = torch.tensor([0, 41, 50, 51])[:, None, None].expand(4, 5, 1).clone()
    ids[~m] = 0  # pad_sequence's zeros on the padding: they must not join episode 0
    td["episode_id"] = ids
    kwargs = dict(importance_sampling_level="sequence", clip_epsilon=0.1, loss_aggregation="dr_grpo", max_length=5)
    loss = moved(GRPOLoss(actor, **kwargs))
    padded = loss(td)["loss_objective"]
    flat = td[m]  # GroupBatcher(traj_format="cat"): [sum T_i], one id per step
    torch.testing.assert_close(loss(flat)["loss_objective"], padded)
    # without an id entry: the episodes delimited by done; a renamed entry through set_keys
    torch.testing.assert_close(loss(flat.exclude("episode_id"))["loss_objective"], padded)
    renamed = flat.exclude("episode_id").set(("collector", "traj_ids"), flat["episode_id"].squeeze(-1))
    traj_ids = GRPOLoss(actor, **kwargs)
    traj_ids.set_keys(episode_id=("collector", "traj_ids"))
    torch.testing.assert_close(traj_ids(renamed)["loss_objective"], padded)
    # the ids decide: one id for two episodes makes one sequence ratio for both
    merged = flat.clone()
    merged["episode_id"][merged["episode_id"] == 41] = 0
    assert not torch.allclose(loss(merged)["loss_objective"], padded)
    with pytest.raises(TypeError, match="episode_id"):
        loss(flat.set("episode_id", flat["episode_id"].float()))


# ------------------------------------------------------------------------------------ mask_truncated_completions
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_mask_truncated_completions_equals_the_core_mask(aggregation):
    actor = discrete_actor()
    td = padded_batch(actor)  # episode 1 is a time-limit truncation
    m = td["collector", "mask"]
    loss = moved(GRPOLoss(actor, loss_aggregation=aggregation, kl_coeff=0.1, entropy_coeff=0.05,
                          mask_truncated_completions=True))  # fmt: skip
    out = loss(td)
    in_loss = mask_truncated_episodes(m, td["next", "truncated"].squeeze(-1))
    assert in_loss[[0, 2, 3]].equal(m[[0, 2, 3]]) and not in_loss[1].any()
    lp, old, adv = actor_lp(actor, td), td["action_log_prob"], td["advantage"].squeeze(-1)
    surrogate, _ = policy_loss("ppo_clip", lp, old, adv, 0.2)
    # dr_grpo keeps the truncated row in its episode count (as SB3 GRPO): aggregate over the full [E, L]
    torch.testing.assert_close(out["loss_objective"], aggregate_loss(surrogate, in_loss, aggregation))
    entropy = actor.get_dist(td).entropy()
    expected = aggregate_loss(regularized_loss(torch.zeros_like(lp), entropy=entropy, ent_coef=0.05)[0], in_loss, aggregation)
    torch.testing.assert_close(out["loss_entropy"], expected)
    # the truncated key is optional: done & ~terminated is the truncation
    torch.testing.assert_close(loss(td.exclude(("next", "truncated")))["loss_objective"], out["loss_objective"])


def test_mask_truncated_completions_gives_the_truncated_episode_no_gradient():
    actor = discrete_actor()
    td = padded_batch(actor)
    m = td["collector", "mask"]
    loss = moved(GRPOLoss(actor, clip_epsilon=10.0, kl_coeff=0.1, entropy_coeff=0.05, mask_truncated_completions=True))
    for key in ("loss_objective", "loss_kl_to_ref", "loss_entropy"):
        grad = obs_grad(loss, td, key)
        assert (grad[1] == 0).all(), key  # the truncated episode: exactly zero
        assert (grad[[0, 2, 3]][m[[0, 2, 3]]] > 0).all(), key
    for reduction in ("none", "sum"):
        out = GRPOLoss(actor, mask_truncated_completions=True, reduction=reduction)(td)["loss_objective"]
        full = GRPOLoss(actor, reduction=reduction)(td)["loss_objective"]
        if reduction == "none":
            assert (out[1] == 0).all() and torch.equal(out[[0, 2, 3]], full[[0, 2, 3]])
        else:
            torch.testing.assert_close(out, full - GRPOLoss(actor, reduction="none")(td)["loss_objective"][1].sum())


def test_truncated_episodes_stay_in_the_group_statistics():
    """The advantage module sees every episode (as SB3 GRPO): the truncated one's group mate keeps its advantage."""
    actor = discrete_actor()
    td = padded_batch(actor).exclude("advantage")
    loss = GRPOLoss(actor, mask_truncated_completions=True, loss_aggregation="bnpo")
    loss.make_value_estimator(GroupRelativeAdvantage(group_size=2))
    out = loss(td.clone())
    with_all = GroupRelativeAdvantage(group_size=2)(td.clone())
    in_loss = mask_truncated_episodes(with_all["collector", "mask"], with_all["next", "truncated"].squeeze(-1))
    lp, old = actor_lp(actor, td), td["action_log_prob"]
    surrogate, _ = policy_loss("ppo_clip", lp, old, with_all["advantage"].squeeze(-1), 0.2)
    torch.testing.assert_close(out["loss_objective"], aggregate_loss(surrogate, in_loss, "bnpo"))
    assert with_all["advantage"][0, 0] != 0  # episode 0's advantage is relative to the truncated episode 1


def test_every_episode_truncated_gives_a_zero_loss_with_a_graph():
    actor = discrete_actor()
    td = padded_batch(actor)
    td["next", "truncated"] = td["next", "done"].clone()
    td["next", "terminated"] = torch.zeros_like(td["next", "done"])
    out = GRPOLoss(actor, mask_truncated_completions=True)(td)
    assert out["loss_objective"] == 0
    out["loss_objective"].backward()


# ------------------------------------------------------------------------------------------ top_entropy_quantile
@pytest.mark.parametrize("kind", KINDS)
def test_top_entropy_quantile_equals_the_core_mask(kind):
    actor = make_actor(kind)
    td = padded_batch(actor)
    m = td["collector", "mask"]
    loss = GRPOLoss(actor, top_entropy_quantile=0.4, loss_aggregation="grpo", kl_coeff=0.1)
    full = GRPOLoss(actor, loss_aggregation="grpo", kl_coeff=0.1)
    every = GRPOLoss(actor, loss_aggregation="grpo", kl_coeff=0.1, top_entropy_quantile=1.0)
    moved(loss)  # the three share the actor and its initial reference
    torch.manual_seed(7)
    out = loss(td)
    lp, old, adv = actor_lp(actor, td), td["action_log_prob"], td["advantage"].squeeze(-1)
    # the closed-form entropy, else the one-sample estimate of a fresh action (TanhNormal has none), as SB3 GRPO:
    # pg_extras.entropy_or_estimate, drawn here with the loss's random state
    torch.manual_seed(7)
    entropy = entropy_of(actor.get_dist(td), td.batch_size)
    if kind == "discrete":
        torch.testing.assert_close(entropy, actor.get_dist(td).entropy())
    keep = top_entropy_mask(torch.where(m, entropy, 0.0), 0.4, m)
    surrogate, _ = policy_loss("ppo_clip", lp, old, adv, 0.2)
    expected = aggregate_loss(torch.where(keep, surrogate, torch.zeros_like(surrogate)), m, "grpo")  # denominators kept
    torch.testing.assert_close(out["loss_objective"], expected)
    torch.testing.assert_close(out["entropy_mask_fraction"], keep.sum() / m.sum())
    assert 0 < int(keep.sum()) < int(m.sum())
    full, every = full(td), every(td)
    assert full["loss_kl_to_ref"] > 0
    torch.testing.assert_close(out["loss_kl_to_ref"], full["loss_kl_to_ref"])  # only the policy-gradient term
    torch.testing.assert_close(every["loss_objective"], full["loss_objective"])
    assert "entropy_mask_fraction" not in every.keys() and "entropy_mask_fraction" in loss.out_keys


def test_top_entropy_quantile_gives_the_low_entropy_steps_no_gradient():
    actor = discrete_actor()
    td = padded_batch(actor)
    m = td["collector", "mask"]
    loss = moved(GRPOLoss(actor, clip_epsilon=10.0, top_entropy_quantile=0.5))  # no clipping: kept steps have a gradient
    keep = top_entropy_mask(torch.where(m, actor.get_dist(td).entropy(), 0.0), 0.5, m)
    grad = obs_grad(loss, td)
    assert (grad[~keep] == 0).all()
    assert (grad[keep] > 0).all()


def test_top_entropy_quantile_with_truncated_episodes_ranks_the_steps_in_the_loss():
    actor = discrete_actor()
    td = padded_batch(actor)
    in_loss = mask_truncated_episodes(td["collector", "mask"], td["next", "truncated"].squeeze(-1))
    out = moved(GRPOLoss(actor, top_entropy_quantile=0.5, mask_truncated_completions=True))(td)
    keep = top_entropy_mask(torch.where(in_loss, actor.get_dist(td).entropy(), 0.0), 0.5, in_loss)
    torch.testing.assert_close(out["entropy_mask_fraction"], keep.sum() / in_loss.sum())


# ------------------------------------------------------------------------------------------------- bad values
def test_bad_variant_values_raise_naming_the_argument():
    actor = discrete_actor()
    for make, match in [
        (lambda: GRPOLoss(actor, importance_sampling_level="episode"), "importance_sampling_level"),
        (lambda: GRPOLoss(actor, importance_sampling_level=None), "importance_sampling_level"),
        (lambda: GRPOLoss(actor, top_entropy_quantile=0.0), "top_entropy_quantile"),
        (lambda: GRPOLoss(actor, top_entropy_quantile=1.5), "top_entropy_quantile"),
        (lambda: GRPOLoss(actor, top_entropy_quantile="0.2"), "top_entropy_quantile"),
        (lambda: GRPOLoss(actor, mask_truncated_completions="yes"), "mask_truncated_completions"),
        (lambda: GroupRelativeAdvantage(2, dynamic_sampling="yes"), "dynamic_sampling"),
        (lambda: GroupRelativeAdvantage(2, keep_return_bounds=(1.0, 0.0)), "keep_return_bounds"),
        (lambda: GroupRelativeAdvantage(2, keep_return_bounds=(1.0,)), "keep_return_bounds"),
        (lambda: GroupBatcher([], 2, dynamic_sampling=1), "dynamic_sampling"),
        (lambda: GroupBatcher([], 2, keep_return_bounds=(5.0, -5.0)), "keep_return_bounds"),
        (lambda: GroupBatcher([], 2, dynamic_sampling=True, gamma=1.5), "gamma"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()


# ------------------------------------------------------------------------ dynamic sampling (advantage module)
def uninformative_group_batch(actor):
    """``padded_batch`` whose group 1 (rows 2, 3) has equal returns: no signal."""
    td = padded_batch(actor).exclude("advantage")
    td["next", "reward"][2] = 0.0
    td["next", "reward"][3] = 0.0
    td["next", "reward"][2, 0] = 1.0
    td["next", "reward"][3, 1] = 1.0
    return td


def test_dynamic_sampling_drops_a_zero_spread_group_from_the_loss_and_counts_it():
    actor = discrete_actor()
    td = uninformative_group_batch(actor)
    est = GroupRelativeAdvantage(group_size=2, dynamic_sampling=True)
    est(td)
    m = td["collector", "mask"]
    rewards = torch.where(m, td["next", "reward"].squeeze(-1), 0.0)
    keep, dropped = informative_groups(rewards.sum(1), torch.tensor([0, 0, 1, 1]))
    assert keep.tolist() == [True, True, False, False] and dropped == 1
    valid = td["shifted_valid"].squeeze(-1)
    assert torch.equal(valid, m & keep[:, None])
    assert (td["advantage"][2:] == 0).all()
    assert est.groups_dropped_uninformative == 1
    assert est.last_stats["groups_dropped_uninformative"] == 1 and est.last_stats["frac_groups_dropped_uninformative"] == 0.5
    assert est.last_stats["num_groups"] == 1
    # the loss: exactly the loss of group 0 alone (the dropped group leaves the denominators too), no gradient to it
    for aggregation in AGGREGATIONS:
        loss = moved(GRPOLoss(actor, clip_epsilon=10.0, loss_aggregation=aggregation, kl_coeff=0.1))
        alone = GroupRelativeAdvantage(group_size=2)(td[:2].exclude("advantage", "shifted_valid", "value_target"))
        torch.testing.assert_close(loss(td)["loss_objective"], loss(alone)["loss_objective"])
        grad = obs_grad(loss, td)
        assert (grad[2:] == 0).all() and (grad[:2][m[:2]] > 0).all()
    est(td.exclude("advantage", "shifted_valid", "value_target"))
    assert est.groups_dropped_uninformative == 2  # cumulative


def test_dynamic_sampling_batch_statistics_leave_the_dropped_groups_out():
    """scale="batch": the kept groups' advantages are computed without the dropped ones (as SB3 GRPO)."""
    actor = discrete_actor()
    td = uninformative_group_batch(actor)
    GroupRelativeAdvantage(group_size=2, scale="batch", dynamic_sampling=True)(td)
    alone = GroupRelativeAdvantage(group_size=2, scale="batch")(td[:2].exclude("advantage", "shifted_valid"))
    torch.testing.assert_close(td["advantage"][:2], alone["advantage"])
    everything = GroupRelativeAdvantage(group_size=2, scale="batch")(uninformative_group_batch(actor))
    assert not torch.allclose(everything["advantage"][:2], alone["advantage"])


def test_keep_return_bounds_drop_groups_by_mean_return_and_gamma_decides():
    actor = discrete_actor()
    td = padded_batch(actor).exclude("advantage")
    m = td["collector", "mask"]
    rewards = torch.where(m, td["next", "reward"].squeeze(-1), 0.0)
    gid = torch.tensor([0, 0, 1, 1])
    returns = returns_to_go(rewards.t(), td["next", "done"].squeeze(-1).t(), gamma=0.9).t()[:, 0]
    means = torch.stack([returns[:2].mean(), returns[2:].mean()])
    bounds = (None, float(means.min()))  # keeps the group with the lower mean only
    est = GroupRelativeAdvantage(group_size=2, gamma=0.9, keep_return_bounds=bounds)
    est(td)
    keep, dropped = informative_groups(returns, gid, bounds, drop_zero_spread=False)
    assert dropped == 1 and est.groups_dropped_uninformative == 1
    assert torch.equal(td["shifted_valid"].squeeze(-1), m & keep[:, None])
    # rewards [1, 0] and [0, 1]: the same undiscounted return (dropped), different discounted ones (kept)
    same = padded_batch(actor, lengths=(2, 2, 2, 2)).exclude("advantage")
    same["next", "reward"] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])[..., None]
    undiscounted = GroupRelativeAdvantage(group_size=2, dynamic_sampling=True)
    undiscounted(same.clone())
    assert undiscounted.groups_dropped_uninformative == 2
    discounted = GroupRelativeAdvantage(group_size=2, gamma=0.5, dynamic_sampling=True)
    discounted(same.clone())
    assert discounted.groups_dropped_uninformative == 0


def test_dynamic_sampling_with_every_group_dropped_gives_a_zero_loss():
    actor = discrete_actor()
    td = padded_batch(actor, lengths=(2, 2, 2, 2)).exclude("advantage")
    td["next", "reward"] = torch.ones(4, 2, 1)
    loss = GRPOLoss(actor)
    est = GroupRelativeAdvantage(group_size=2, dynamic_sampling=True)
    loss.make_value_estimator(est)
    out = loss(td)
    assert out["loss_objective"] == 0 and est.groups_dropped_uninformative == 2 and est.last_stats["num_groups"] == 0
    out["loss_objective"].backward()


# ------------------------------------------------------------------------------- dynamic sampling (GroupBatcher)
def episode_steps(episode: int, group: int, rewards: list[float]) -> TensorDict:
    """The steps of one whole episode as a flat collector batch would hold them."""
    n = len(rewards)
    done = torch.zeros(n, 1, dtype=torch.bool)
    done[-1] = True
    return TensorDict(
        {
            "observation": torch.full((n, 3), float(episode)),
            "episode_id": torch.full((n, 1), episode),
            "group_id": torch.full((n, 1), group),
            "next": {"reward": torch.tensor(rewards)[:, None], "done": done, "terminated": done.clone()},
        },
        batch_size=[n],
    )


def fake_collector(gamma_trap: bool = False):
    """Two collector batches of whole episodes of 5 groups; groups 1 and 3 have equal (undiscounted) returns."""
    returns = {0: ([1.0, 2.0], [1.0]), 1: ([1.0, 1.0], [2.0]), 2: ([0.5], [3.0, 1.0]), 4: ([2.0], [1.0])}
    returns[3] = ([1.0, 0.0], [0.0, 1.0]) if gamma_trap else ([1.0], [1.0])
    returns = dict(sorted(returns.items()))
    episodes = [episode_steps(2 * g + k, g, r) for g, pair in returns.items() for k, r in enumerate(pair)]
    return [torch.cat(episodes[:6]), torch.cat(episodes[6:])]


@pytest.mark.parametrize("traj_format", ["padded", "cat"])
def test_group_batcher_keeps_collecting_until_the_batch_is_full_of_informative_groups(traj_format):
    plain = list(GroupBatcher(fake_collector(), 2, 2, traj_format=traj_format))
    dapo = GroupBatcher(fake_collector(), 2, 2, traj_format=traj_format, dynamic_sampling=True)
    batches = list(dapo)

    def groups(batch):
        gid = batch["group_id"][:, 0, 0] if traj_format == "padded" else batch["group_id"][:, 0]
        return sorted(set(gid.tolist()))

    assert [groups(b) for b in plain] == [[0, 1], [2, 3]]
    assert [groups(b) for b in batches] == [[0, 2]]  # group 1 dropped; 4 waits for a second informative group
    assert dapo.groups_dropped_uninformative == 2 and dapo.stats["groups_dropped_uninformative"] == 2
    assert dapo.groups_yielded == 2 and dapo.num_pending == 2  # group 4 (two one-step episodes) waits
    assert "groups_dropped_uninformative" not in GroupBatcher([], 2).stats
    # the same decision as the core, on every complete group
    rets = torch.tensor([3.0, 1.0, 2.0, 2.0, 0.5, 4.0, 1.0, 1.0, 2.0, 1.0])
    keep, dropped = informative_groups(rets, torch.arange(10) // 2)
    assert dropped == 2 and keep.view(5, 2)[:, 0].tolist() == [True, False, True, False, True]
    if traj_format == "padded":
        batch = batches[0]
        assert batch.shape[0] == 4 and batch["collector", "mask"].sum() == 6
        assert batch["episode_id"][:, 0, 0].tolist() == [0, 1, 4, 5]


def test_group_batcher_batches_hold_exactly_groups_per_batch_groups():
    # informative, uninformative, then three informative groups, all complete in one collector batch
    rewards = [([1.0], [2.0]), ([1.0], [1.0]), ([1.0], [3.0]), ([0.0], [2.0]), ([4.0], [1.0])]
    steps = torch.cat([episode_steps(2 * g + k, g, r) for g, pair in enumerate(rewards) for k, r in enumerate(pair)])
    batcher = GroupBatcher([steps], 2, 2, dynamic_sampling=True, traj_format="cat")
    batches = list(batcher)
    assert [sorted(set(b["group_id"][:, 0].tolist())) for b in batches] == [[0, 2], [3, 4]]
    assert batcher.groups_dropped_uninformative == 1 and batcher.groups_yielded == 4 and batcher.num_pending == 0
    assert batcher.policy_version == 2  # one version per yielded batch (auto_version)


def test_group_batcher_dynamic_sampling_uses_gamma_and_bounds():
    # group 3 has rewards [1, 0] / [0, 1]: equal undiscounted returns, different discounted ones
    undiscounted = list(GroupBatcher(fake_collector(gamma_trap=True), 2, 1, dynamic_sampling=True))
    discounted = list(GroupBatcher(fake_collector(gamma_trap=True), 2, 1, dynamic_sampling=True, gamma=0.5))
    assert [int(b["group_id"][0, 0, 0]) for b in undiscounted] == [0, 2, 4]
    assert [int(b["group_id"][0, 0, 0]) for b in discounted] == [0, 1, 2, 3, 4]  # 1 and 3 differ once discounted
    # keep_return_bounds alone (no zero-spread test): mean returns 2, 2, 2.25, 1, 1.5 -> keep those in [1.8, 2.1]
    bounded = GroupBatcher(fake_collector(), 2, 1, keep_return_bounds=(1.8, 2.1))
    assert [int(b["group_id"][0, 0, 0]) for b in bounded] == [0, 1]
    assert bounded.groups_dropped_uninformative == 3


# --------------------------------------------------------------------------------- learning smoke tests (CartPole)
NUM_ENVS, GROUP_SIZE = 8, 4


def cartpole_groups(seed: int, max_episode_steps: int | None = None) -> TransformedEnv:
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    vec = gym.make_vec(
        "CartPole-v1",
        num_envs=NUM_ENVS,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED},
        **kwargs,
    )
    env = TransformedEnv(GroupedEnv(GymWrapper(vec, categorical_action_encoding=True), GROUP_SIZE, seed=seed), RewardSum())
    env.set_seed(seed)
    return env


def small_actor(seed: int) -> ProbabilisticActor:
    torch.manual_seed(seed)
    return ProbabilisticActor(
        TensorDictModule(MLP(in_features=4, out_features=2, num_cells=[32]), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )


def episode_returns(batch) -> list[float]:
    done = batch["next", "done"].squeeze(-1)
    mask = batch.get(("collector", "mask"), default=None)
    done = done if mask is None else done & mask
    return batch["next", "episode_reward"].squeeze(-1)[done].tolist()


def train_cartpole(actor, loss: GRPOLoss, frames: int = 4_000, max_episode_steps: int | None = None, **batcher_kwargs):
    """GRPO on CartPole for ``frames`` env steps; returns (episode returns per batch, losses, batcher)."""
    advantage = GroupRelativeAdvantage(GROUP_SIZE, mode="return_to_go")
    optim = torch.optim.Adam(loss.parameters(), lr=3e-3)
    collector = Collector(
        cartpole_groups(0, max_episode_steps), actor, frames_per_batch=64, auto_register_policy_transforms=False
    )
    batcher = GroupBatcher(collector, groups_per_batch=2, **batcher_kwargs)
    returns, losses = [], []
    try:
        for batch in batcher:
            returns.append(episode_returns(batch))
            advantage(batch)
            for _ in range(4):
                out = loss(batch)
                total = sum(v for k, v in out.items() if k.startswith("loss_"))
                losses.append(float(total.detach()))
                optim.zero_grad()
                total.backward()
                torch.nn.utils.clip_grad_norm_(loss.parameters(), 1.0)
                optim.step()
            if batcher.env_steps >= frames:
                break
    finally:
        collector.shutdown()
    return returns, losses, batcher


def assert_does_not_collapse(per_batch: list[list[float]], losses: list[float]) -> None:
    assert losses and bool(torch.isfinite(torch.tensor(losses)).all())
    returns = [r for batch in per_batch for r in batch]
    first, last = returns[:24], returns[-24:]
    before, after = sum(first) / len(first), sum(last) / len(last)
    print(f"returns {before:.1f} -> {after:.1f} over {len(returns)} episodes")
    assert after > before, (before, after)


def test_gspo_learns_cartpole():
    actor = small_actor(0)
    loss = GRPOLoss(actor, importance_sampling_level="sequence")
    returns, losses, _ = train_cartpole(actor, loss, traj_format="cat")  # the episode ids of the "cat" layout
    assert_does_not_collapse(returns, losses)


def test_dynamic_sampling_learns_cartpole():
    # CartPole groups always differ: a lower bound on the mean return makes the filter drop groups
    actor = small_actor(0)
    returns, losses, batcher = train_cartpole(actor, GRPOLoss(actor), dynamic_sampling=True, keep_return_bounds=(18.0, None))
    assert batcher.groups_dropped_uninformative > 0
    group_means = torch.tensor([r for batch in returns for r in batch]).view(-1, GROUP_SIZE).mean(1)
    assert (group_means >= 18.0).all()  # every yielded group is in the bounds
    assert_does_not_collapse(returns, losses)


def test_mask_truncated_completions_learns_cartpole():
    actor = small_actor(0)
    loss = GRPOLoss(actor, mask_truncated_completions=True)
    returns, losses, _ = train_cartpole(actor, loss, max_episode_steps=40)  # many time-limit truncations
    assert sum(r == 40.0 for batch in returns for r in batch) >= 10
    assert_does_not_collapse(returns, losses)


def test_top_entropy_quantile_learns_cartpole():
    actor = small_actor(0)
    loss = GRPOLoss(actor, top_entropy_quantile=0.2)
    returns, losses, _ = train_cartpole(actor, loss)
    assert_does_not_collapse(returns, losses)


# -- ReMax: the greedy member ------------------------------------------------------------------------------------------


def remax_cartpole(seed: int = 0) -> TransformedEnv:
    vec = gym.make_vec(
        "CartPole-v1", num_envs=3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env = GroupedEnv(GymWrapper(vec, categorical_action_encoding=True), 2, seed=seed, id_offset=0, greedy_member=True)
    return TransformedEnv(env, RewardSum())


def test_greedy_member_policy_takes_the_deterministic_action_only_where_flagged():
    actor = small_actor(0)
    obs = torch.randn(64, 4)
    greedy = torch.zeros(64, 1, dtype=torch.bool)
    greedy[::2] = True
    with set_exploration_type(ExplorationType.RANDOM):  # as in a collector
        td = GreedyMemberPolicy(actor)(TensorDict({"observation": obs, "greedy": greedy}, [64]))
    argmax = actor.module[0](TensorDict({"observation": obs}, [64]))["logits"].argmax(-1)
    assert torch.equal(td["action"][::2], argmax[::2])  # greedy rows: argmax
    assert not torch.equal(td["action"][1::2], argmax[1::2])  # sampled rows: sampled (32 draws, not all the argmax)


def test_remax_batches_carry_the_greedy_member_and_its_return_is_the_baseline():
    actor = small_actor(1)
    env = remax_cartpole()
    collector = Collector(env, GreedyMemberPolicy(actor), frames_per_batch=60, auto_register_policy_transforms=False)
    batcher = GroupBatcher(collector, groups_per_batch=2)  # greedy_member read from the env
    assert batcher.greedy_member
    batch = next(iter(batcher))
    collector.shutdown()
    assert batch.shape[0] == 2 * 3  # 2 sampled + 1 greedy row per group
    mask = batch["collector", "mask"]
    greedy_rows = batch["greedy"].squeeze(-1)[:, 0]
    assert greedy_rows.tolist() == [False, False, True, False, False, True]  # the greedy one last in its group
    est = GroupRelativeAdvantage(2, mode="remax")
    est(batch)
    ret = (batch["next", "reward"].squeeze(-1) * mask).sum(1)
    adv = batch["advantage"].squeeze(-1)[:, 0]
    for g in range(2):
        rows = slice(3 * g, 3 * g + 3)
        expected = ret[rows][:2] - ret[rows][2]
        torch.testing.assert_close(adv[rows][:2], expected)
    valid = batch["shifted_valid"].squeeze(-1)
    assert not valid[greedy_rows].any() and bool((valid[~greedy_rows] == mask[~greedy_rows]).all())
    # the greedy episode was played with the argmax action from its group's seed
    with torch.no_grad():
        logits = actor.module[0](batch.select("observation"))["logits"]
    steps = mask & greedy_rows[:, None]
    assert torch.equal(batch["action"][steps], logits.argmax(-1)[steps])
    first_obs = batch["observation"][:, 0]
    assert torch.equal(first_obs[0], first_obs[2]) and torch.equal(first_obs[3], first_obs[5])


def test_remax_needs_the_greedy_flag_and_a_greedy_episode_per_group():
    reward = torch.ones(2, 1, 1)
    done = torch.ones(2, 1, 1, dtype=torch.bool)
    td = TensorDict(
        {"next": {"reward": reward, "done": done, "terminated": done}, "group_id": torch.zeros(2, 1, 1).long()}, [2, 1]
    )
    with pytest.raises(KeyError, match="greedy"):
        GroupRelativeAdvantage(2, mode="remax")(td.clone())
    td["greedy"] = torch.zeros(2, 1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="without a greedy episode"):
        GroupRelativeAdvantage(2, mode="remax")(td.clone())


def test_remax_learns_cartpole():
    actor = small_actor(0)
    vec = gym.make_vec(
        "CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.DISABLED}
    )
    env = TransformedEnv(
        GroupedEnv(GymWrapper(vec, categorical_action_encoding=True), GROUP_SIZE, seed=0, greedy_member=True), RewardSum()
    )
    loss, advantage = GRPOLoss(actor), GroupRelativeAdvantage(GROUP_SIZE, mode="remax")
    optim = torch.optim.Adam(loss.parameters(), lr=3e-3)
    collector = Collector(env, GreedyMemberPolicy(actor), frames_per_batch=64, auto_register_policy_transforms=False)
    batcher = GroupBatcher(collector, groups_per_batch=2)
    returns, losses = [], []
    try:
        for batch in batcher:
            sampled = ~batch["greedy"].squeeze(-1)[:, 0]
            returns.append(episode_returns(batch[sampled]))
            advantage(batch)
            for _ in range(4):
                total = sum(v for k, v in loss(batch).items() if k.startswith("loss_"))
                losses.append(float(total.detach()))
                optim.zero_grad()
                total.backward()
                optim.step()
            if batcher.env_steps >= 6_000:
                break
    finally:
        collector.shutdown()
    assert_does_not_collapse(returns, losses)


def test_remax_without_greedy_member_policy_warns_and_with_it_does_not():
    import warnings

    for policy, expect in ((lambda a: a, True), (GreedyMemberPolicy, False)):
        actor = small_actor(1)
        collector = Collector(remax_cartpole(), policy(actor), frames_per_batch=60, auto_register_policy_transforms=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            next(iter(GroupBatcher(collector, groups_per_batch=1)))
        collector.shutdown()
        warned = [w for w in caught if "GreedyMemberPolicy" in str(w.message)]
        assert bool(warned) == expect, [str(w.message) for w in caught]


def test_reduction_mean_is_torchrls_mean_over_the_valid_steps():
    """reduction='mean' means what it means in torchrl.objectives (the valid-step mean, our 'bnpo'); our aggregation
    modes stay under loss_aggregation, whose default 'grpo' applies when reduction is not given."""
    actor = discrete_actor()
    td = padded_batch(actor)
    m = td["collector", "mask"]
    per_step = GRPOLoss(actor, reduction="none")(td)["loss_objective"]
    torch.testing.assert_close(GRPOLoss(actor, reduction="mean")(td)["loss_objective"], per_step[m].mean())
    per_episode = torch.stack([per_step[i][m[i]].mean() for i in range(m.shape[0]) if m[i].any()]).mean()
    torch.testing.assert_close(GRPOLoss(actor)(td)["loss_objective"], per_episode)  # loss_aggregation="grpo"
    with pytest.raises(ValueError, match="disagree"):
        GRPOLoss(actor, reduction="mean", loss_aggregation="dr_grpo")
