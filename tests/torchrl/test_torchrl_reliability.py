"""Bad input to the TorchRL adapters gives a clear error (or the right result), never a NaN update (issue 10)."""

from __future__ import annotations

import math

import pytest
import torch
from torchrl_helpers import critic, discrete_actor, padded_batch

from torchrl_pg_extras import GroupRelativeAdvantage, GRPOLoss, MonteCarloEstimator, REINFORCELoss, TRPOLoss, TRPOStepper

torch.set_num_threads(1)


def fixed_frame_batch(actor, n_envs: int = 4, steps: int = 8):
    """A ``[N, T]`` fixed-frame batch (no mask, episodes may run past its end), as ``Collector(frames_per_batch=...)``."""
    td = padded_batch(actor, lengths=(steps,) * n_envs).exclude("advantage", "value_target", "collector")
    done = torch.zeros(n_envs, steps, 1, dtype=torch.bool)
    done[:, 3] = True
    td["next", "done"], td["next", "terminated"], td["next", "truncated"] = done, done.clone(), torch.zeros_like(done)
    return td


def test_grpo_nan_behaviour_log_prob_is_an_error_not_a_nan_update():
    actor = discrete_actor()
    td = padded_batch(actor)
    td["action_log_prob"][0, 0] = float("nan")
    loss = GRPOLoss(actor)
    before = [p.detach().clone() for p in loss.parameters()]
    with pytest.raises(ValueError, match=r"behaviour log-probability.*NaN"):
        loss(td)
    assert all(torch.equal(a, b) for a, b in zip(before, loss.parameters(), strict=True))
    td["action_log_prob"][0, 0] = -1.0
    td["action_log_prob"][1, -1] = float("nan")  # row 1 has 3 valid steps: a NaN in its padding is harmless
    assert torch.isfinite(loss(td)["loss_objective"])


def test_trpo_nan_reward_on_the_gae_path_raises_before_any_update():
    actor, value_net = discrete_actor(), critic()
    loss = TRPOLoss(actor, value_net)
    stepper = TRPOStepper(loss, torch.optim.Adam(loss.critic_parameters(), lr=1e-2), critic_updates=2)
    td = fixed_frame_batch(actor)
    td["next", "reward"][1, 2] = float("nan")
    before = [p.detach().clone() for p in loss.parameters()]
    with pytest.raises(ValueError, match=r"TRPOLoss: the reward \(.next., .reward.\) has non-finite values"):
        stepper.step(None, td)
    assert all(torch.equal(a, b) for a, b in zip(before, loss.parameters(), strict=True))
    with pytest.raises(ValueError, match="reward"):
        loss(td)


@pytest.mark.parametrize("name", ["reinforce", "grpo", "trpo_gae", "trpo_group"])
def test_integer_rewards_work(name):
    actor = discrete_actor()
    td = padded_batch(actor).exclude("advantage", "value_target")
    td["next", "reward"] = torch.randint(0, 5, td["next", "reward"].shape)
    if name == "reinforce":
        out, ref_loss = REINFORCELoss(actor)(td), REINFORCELoss(actor)
    elif name == "grpo":
        out = GRPOLoss(actor).make_value_estimator(GroupRelativeAdvantage(group_size=2))(td)
        ref_loss = GRPOLoss(actor).make_value_estimator(GroupRelativeAdvantage(group_size=2))
    elif name == "trpo_gae":
        value_net = critic()
        out, ref_loss = TRPOLoss(actor, value_net)(td), TRPOLoss(actor, value_net)
    else:
        out = TRPOLoss(actor).make_value_estimator(GroupRelativeAdvantage(group_size=2))(td)
        ref_loss = TRPOLoss(actor).make_value_estimator(GroupRelativeAdvantage(group_size=2))
    as_float = td.clone()
    as_float["next", "reward"] = td["next", "reward"].float()
    key = next(k for k in out.keys() if k.startswith("loss_"))
    assert torch.isfinite(out[key]) and torch.allclose(out[key], ref_loss(as_float)[key])
    assert not td["next", "reward"].is_floating_point()  # the input is not modified


def test_missing_collector_mask_is_reported_as_such():
    actor = discrete_actor()
    td = padded_batch(actor).exclude("advantage", "value_target")
    pad = ~td["collector", "mask"]
    td["next", "reward"][pad] = 0.0  # TorchRL pads with zeros
    unmasked = td.exclude(("collector", "mask"))
    with pytest.raises(ValueError, match=r"no validity mask \('collector', 'mask'\)"):
        MonteCarloEstimator()(unmasked.clone())
    with pytest.raises(ValueError, match="no validity mask"):
        GroupRelativeAdvantage(group_size=2)(unmasked.clone())
    # a fixed-frame batch whose episodes run past its end is not mistaken for a padded one
    with pytest.raises(ValueError, match="do not end inside this batch") as err:
        MonteCarloEstimator()(fixed_frame_batch(actor))
    assert "no validity mask" not in str(err.value)


def test_float_group_ids_are_rejected():
    td = padded_batch(discrete_actor())
    td["group_id"] = td["group_id"].float() + 0.5
    with pytest.raises(TypeError, match="group labels must be integers"):
        GroupRelativeAdvantage()(td)


@pytest.mark.parametrize("missing", [("next", "observation"), ("next", "done")])
def test_trpo_names_a_missing_input_key(missing):
    actor, value_net = discrete_actor(), critic()
    td = fixed_frame_batch(actor).exclude(missing)
    with pytest.raises(KeyError, match=str(missing).replace("(", r"\(").replace(")", r"\)")):
        TRPOLoss(actor, value_net)(td)
    with pytest.raises(KeyError, match="next"):
        TRPOLoss(actor, value_net).trust_region_step(td)


@pytest.mark.parametrize("max_kl", [math.inf, 0.0, -0.01, math.nan, "0.01"])
def test_trpo_max_kl_must_be_a_finite_positive_number(max_kl):
    with pytest.raises(ValueError, match="max_kl"):
        TRPOLoss(discrete_actor(), critic(), max_kl=max_kl)


@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_grpo_on_an_all_padding_batch_is_zero_not_nan(aggregation):
    actor = discrete_actor()
    td = padded_batch(actor)
    td["collector", "mask"] = torch.zeros_like(td["collector", "mask"])
    out = GRPOLoss(actor, loss_aggregation=aggregation, kl_coeff=0.1, entropy_coeff=0.01)(td)
    for key in ("loss_objective", "loss_kl_to_ref", "loss_entropy"):
        assert out[key].item() == 0.0
    out["loss_objective"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in actor.parameters())
