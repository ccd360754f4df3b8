"""MonteCarloEstimator and GroupRelativeAdvantage against the core's formulas, on hand-made tensordicts."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl_helpers import critic, discrete_actor, padded_batch

from pg_extras import EpisodeLayout, complete_episode_mask, discounted_cumsum, group_relative_advantages, returns_to_go
from torchrl_pg_extras import GroupRelativeAdvantage, MonteCarloEstimator

torch.set_num_threads(1)


def fixed_frame_batch(seed: int = 0, n: int = 3, t: int = 7) -> TensorDict:
    """``[N, T]`` like a fixed-frame collector batch: episodes end inside and are cut at the end."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(n, t, dtype=torch.bool)
    truncated = torch.zeros(n, t, dtype=torch.bool)
    terminated[0, 2] = True
    terminated[0, 6] = True  # env 0: two complete episodes
    truncated[1, 3] = True  # env 1: a truncated episode, then one cut by the batch end
    terminated[2, 6] = True  # env 2: one complete episode
    return TensorDict(
        {
            "observation": torch.randn(n, t, 3, generator=g),
            "next": {
                "observation": torch.randn(n, t, 3, generator=g),
                "reward": torch.randn(n, t, 1, generator=g),
                "done": (terminated | truncated)[..., None],
                "terminated": terminated[..., None],
                "truncated": truncated[..., None],
            },
        },
        batch_size=[n, t],
    )


def test_mc_matches_core_and_rejects_incomplete_episodes():
    td = fixed_frame_batch()
    with pytest.raises(ValueError, match="trajs_per_batch"):
        MonteCarloEstimator(gamma=0.9)(td.clone())
    out = MonteCarloEstimator(gamma=0.9, incomplete="mask")(td.clone())
    r, term, trunc = (td["next", k].squeeze(-1).t() for k in ("reward", "terminated", "truncated"))
    expected = returns_to_go(r, term, trunc, gamma=0.9).t()
    valid = complete_episode_mask(term | trunc).t()
    assert torch.equal(out["shifted_valid"].squeeze(-1), valid)
    assert not valid[1, 4:].any() and valid[1, :4].all()  # the cut episode only
    torch.testing.assert_close(out["value_target"].squeeze(-1)[valid], expected[valid])
    torch.testing.assert_close(out["advantage"], out["value_target"])
    assert (out["advantage"].squeeze(-1)[~valid] == 0).all()


def test_mc_terminated_vs_truncated_and_baseline():
    td = fixed_frame_batch()
    value_net = critic()
    out = MonteCarloEstimator(gamma=0.9, value_network=value_net, bootstrap_truncated=True)(td.clone())
    with torch.no_grad():
        v = value_net(td.select("observation").clone())["state_value"].squeeze(-1)
        v_next = value_net(td["next"].select("observation").clone())["state_value"].squeeze(-1)
    G = out["value_target"].squeeze(-1)
    r = td["next", "reward"].squeeze(-1)
    # terminated: no bootstrap; truncated and cut-by-batch-end: bootstrap with V(s')
    torch.testing.assert_close(G[0, 2], r[0, 2])
    torch.testing.assert_close(G[1, 3], r[1, 3] + 0.9 * v_next[1, 3])
    torch.testing.assert_close(G[1, 6], r[1, 6] + 0.9 * v_next[1, 6])
    torch.testing.assert_close(G[1, 2], r[1, 2] + 0.9 * G[1, 3])
    torch.testing.assert_close(out["advantage"].squeeze(-1), G - v)  # baseline (seed 2.3)
    assert bool(out["shifted_valid"].all())
    # pure Monte-Carlo: a truncation is summed up to its last reward, never bootstrapped
    pure = MonteCarloEstimator(gamma=0.9, incomplete="mask")(td.clone())
    torch.testing.assert_close(pure["value_target"].squeeze(-1)[1, 3], r[1, 3])


def test_mc_padded_trajectories_and_set_keys():
    td = padded_batch(discrete_actor())
    est = MonteCarloEstimator(gamma=0.95)
    est.set_keys(reward="rew", advantage="adv", valid="ok")
    td.set(("next", "rew"), td.get(("next", "reward")))
    est(td)
    mask = td["collector", "mask"]
    for i, n in enumerate(mask.sum(1).tolist()):
        expected = discounted_cumsum(td["next", "rew"][i, :n, 0], 0.95)
        torch.testing.assert_close(td["adv"][i, :n, 0], expected)
    assert torch.equal(td["ok"].squeeze(-1), mask)
    renamed = MonteCarloEstimator()
    renamed.set_keys(reward="missing")
    with pytest.raises(KeyError, match=r"set_keys\(reward="):
        renamed(td)


def test_mc_bad_arguments():
    with pytest.raises(ValueError, match="gamma"):
        MonteCarloEstimator(gamma=1.5)
    with pytest.raises(ValueError, match="incomplete"):
        MonteCarloEstimator(incomplete="drop")
    with pytest.raises(ValueError, match="value_network"):
        MonteCarloEstimator(bootstrap_truncated=True)


@pytest.mark.parametrize("mode", ["outcome", "process", "return_to_go"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantage_matches_core(mode, scale):
    td = padded_batch(discrete_actor())
    GroupRelativeAdvantage(group_size=2, mode=mode, scale=scale, gamma=0.9)(td)
    mask = td["collector", "mask"]
    rewards = torch.where(mask, td["next", "reward"].squeeze(-1), 0.0)
    expected = group_relative_advantages(rewards, mask, group_size=2, mode=mode, scale=scale, gamma=0.9).advantages
    torch.testing.assert_close(td["advantage"].squeeze(-1), expected)


def test_group_advantage_uses_group_ids_rloo_and_zero_std():
    td = padded_batch(discrete_actor())
    # relabel: episodes 0 and 3 form a group, 1 and 2 another
    gid = torch.tensor([7, 9, 9, 7])[:, None, None].expand(4, 5, 1).clone()
    td.set("group_id", gid)
    td["next", "reward"][3] = 0.0
    td["next", "reward"][0] = 0.0  # group 7: equal returns -> zero advantage, no NaN
    est = GroupRelativeAdvantage(group_size=2, rloo=True)
    est(td)
    mask = td["collector", "mask"]
    rewards = torch.where(mask, td["next", "reward"].squeeze(-1), 0.0)
    expected = group_relative_advantages(rewards, mask, group_ids=gid[:, 0, 0], rloo=True).advantages
    torch.testing.assert_close(td["advantage"].squeeze(-1), expected)
    assert (td["advantage"][[0, 3]] == 0).all() and torch.isfinite(td["advantage"]).all()
    assert est.last_stats["frac_zero_std_groups"] == 0.5


def test_group_advantage_on_fixed_frame_batch_with_incomplete_episodes():
    td = fixed_frame_batch()
    td.set("group_id", torch.zeros(3, 7, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="do not end"):
        GroupRelativeAdvantage()(td.clone())
    out = GroupRelativeAdvantage(incomplete="mask")(td.clone())
    done = (td["next", "terminated"] | td["next", "truncated"]).squeeze(-1)
    layout = EpisodeLayout.from_dones(done.t())
    keep = layout.complete
    rewards = layout.to_episodes(td["next", "reward"].squeeze(-1).t())[keep]
    adv = group_relative_advantages(rewards, layout.mask[keep], group_ids=torch.zeros(int(keep.sum()), dtype=torch.long))
    full = torch.zeros_like(layout.mask, dtype=torch.float32)
    full[keep] = adv.advantages
    torch.testing.assert_close(out["advantage"].squeeze(-1), layout.to_steps(full).t())
    assert torch.equal(out["shifted_valid"].squeeze(-1), layout.step_mask(keep).t())


def test_group_advantage_errors():
    td = padded_batch(discrete_actor())
    with pytest.raises(ValueError, match="does not divide"):
        GroupRelativeAdvantage(group_size=3)(td.exclude("group_id"))
    with pytest.raises(ValueError, match="group_size=3"):
        GroupRelativeAdvantage(group_size=3)(td.clone())
    dropped = GroupRelativeAdvantage(group_size=3, incomplete="mask")(td.clone())
    assert not dropped["shifted_valid"].any()
    with pytest.raises(KeyError, match="GroupedEnv"):
        GroupRelativeAdvantage()(td.exclude("group_id"))
    bad = td.clone()
    bad["group_id"][0, 1] = 5
    with pytest.raises(ValueError, match="changes inside an episode"):
        GroupRelativeAdvantage()(bad)
    bad = ({"group_size": 0}, {"mode": "best"}, {"scale": "max"}, {"gamma": -0.1}, {"rloo": "no"}, {"group_size": 1})
    for kwargs in (*bad, {"eps": 0.0}):
        with pytest.raises(ValueError):
            GroupRelativeAdvantage(**kwargs)


@pytest.mark.parametrize("bad", [2, -3, 1.0, True])
def test_time_dim_out_of_range_is_refused_not_wrapped(bad):
    done = torch.zeros(2, 5, 1, dtype=torch.bool)
    done[:, -1] = True
    td = TensorDict({"next": {"reward": torch.ones(2, 5, 1), "done": done, "terminated": done}}, [2, 5])
    with pytest.raises(ValueError, match=r"time_dim=.* is not a batch dimension .* \[-2, 1\]"):
        MonteCarloEstimator(time_dim=bad if not isinstance(bad, bool | float) else None)(td, time_dim=bad)
    # in range, negative included: the same as the default (the last dimension)
    a = MonteCarloEstimator(time_dim=-1)(td.clone())["advantage"]
    b = MonteCarloEstimator()(td.clone())["advantage"]
    torch.testing.assert_close(a, b)


def test_a_trailing_singleton_batch_dimension_is_not_read_as_time():
    done = torch.zeros(2, 5, 1, dtype=torch.bool)
    done[:, -1] = True
    td = TensorDict({"next": {"reward": torch.ones(2, 5, 1), "done": done, "terminated": done}}, [2, 5])
    unsqueezed = td.unsqueeze(-1)  # [2, 5, 1]
    with pytest.raises(ValueError, match="ends in a singleton dimension"):
        MonteCarloEstimator()(unsqueezed.clone())
    expected = MonteCarloEstimator()(td.clone())["advantage"]
    torch.testing.assert_close(MonteCarloEstimator(time_dim=1)(unsqueezed.clone())["advantage"], expected.unsqueeze(2))
