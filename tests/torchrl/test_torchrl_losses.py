"""REINFORCELoss, TRPOLoss and GRPOLoss: TorchRL conventions and equality with the core's formulas."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl_helpers import clone_module, critic, discrete_actor, make_actor, padded_batch

from pg_extras import aggregate_loss, clipped_surrogate_loss, kl_estimate, standardize
from torchrl_pg_extras import GroupRelativeAdvantage, GRPOLoss, MonteCarloEstimator, REINFORCELoss, TRPOLoss

torch.set_num_threads(1)

KINDS = ["discrete", "continuous"]
LOSSES = ["reinforce", "reinforce_baseline", "trpo", "grpo"]


def build(name: str, actor, value_net=None, **kwargs):
    if name == "reinforce":
        return REINFORCELoss(actor, **kwargs)
    if name == "reinforce_baseline":
        return REINFORCELoss(actor, value_net or critic(), **kwargs)
    if name == "trpo":  # the gradient of the reported surrogate, for the checks below
        return TRPOLoss(actor, value_net or critic(), differentiable_objective=True, **kwargs)
    return GRPOLoss(actor, kl_coeff=0.1, entropy_coeff=0.01, **kwargs)


def loss_sum(out: TensorDict) -> torch.Tensor:
    return sum(v.sum() for k, v in out.items() if k.startswith("loss_"))


def actor_lp(actor, td):
    """Log-prob of the stored actions under ``actor`` (independent of the losses' code)."""
    dist = actor.get_dist(td)
    lp = dist.log_prob(td["action"])
    return lp if lp.shape == td.shape else lp.sum(-1)


def mask_of(td):
    return td["collector", "mask"]


def mmean(x, m):
    return x[m].mean()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction_shapes(name, kind, reduction):
    actor = make_actor(kind)
    td = padded_batch(actor)
    out = build(name, actor, reduction=reduction)(td)
    for key, value in out.items():
        if key.startswith("loss_"):
            assert value.shape == (td.shape if reduction == "none" else ()), (key, value.shape)
            assert torch.isfinite(value).all()
        else:
            assert value.shape == (), key
    if reduction == "none":
        m = mask_of(td)
        for key, value in out.items():
            if key.startswith("loss_"):
                assert (value[~m] == 0).all()


@pytest.mark.parametrize("name", LOSSES)
def test_functional_and_stateful_agree(name):
    actor = discrete_actor()
    value_net = critic()
    td = padded_batch(actor)
    loss_f = build(name, actor, value_net, functional=True)
    loss_s = build(name, clone_module(actor), clone_module(value_net), functional=False)
    out_f, out_s = loss_f(td), loss_s(td)
    assert set(out_f.keys()) == set(out_s.keys())
    for key in out_f.keys():
        torch.testing.assert_close(out_f[key], out_s[key])
    loss_sum(out_f).backward()
    loss_sum(out_s).backward()
    for pf, ps in zip(loss_f.parameters(), loss_s.parameters(), strict=True):
        torch.testing.assert_close(pf.grad, ps.grad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", LOSSES)
def test_masked_steps_do_not_contribute(name, kind):
    actor = make_actor(kind)
    td = padded_batch(actor)
    loss = build(name, actor)
    torch.manual_seed(0)  # Monte-Carlo entropy of TanhNormal: same samples in both calls
    out = loss(td)
    loss_sum(out).backward()
    g1 = [p.grad.clone() for p in loss.parameters()]
    loss.zero_grad()
    td2 = td.clone()
    pad = ~mask_of(td2)
    for key in ("advantage", "value_target", "observation", ("next", "reward")):
        td2[key][pad] = -td2[key][pad] * 3.0 + 1.0
    td2["action_log_prob"][pad] = 0.5
    torch.manual_seed(0)
    out2 = loss(td2)
    for key in out.keys():
        torch.testing.assert_close(out[key], out2[key])
    loss_sum(out2).backward()
    for a, b in zip(g1, (p.grad for p in loss.parameters()), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", LOSSES)
def test_set_keys_renames_end_to_end(name):
    actor = discrete_actor()
    td = padded_batch(actor)
    reference = build(name, actor)(td)
    renamed = td.rename_key_("action", "act").rename_key_("action_log_prob", "old_lp").rename_key_("advantage", "adv")
    renamed.rename_key_("value_target", "ret")
    renamed.rename_key_(("next", "done"), ("next", "end"))
    loss = build(name, actor)
    keys = {"action": "act", "sample_log_prob": "old_lp", "advantage": "adv", "done": "end"}
    if name != "grpo":
        keys["value_target"] = "ret"
    loss.set_keys(**keys)
    out = loss(renamed)
    for key in reference.keys():
        torch.testing.assert_close(out[key], reference[key])
    with pytest.raises(ValueError, match=r"unknown key 'not_a_key'; the keys are"):
        loss.set_keys(not_a_key="x")


@pytest.mark.parametrize("name", ["reinforce_baseline", "trpo"])
def test_gradient_isolation(name):
    actor, value_net = discrete_actor(), critic()
    td = padded_batch(actor)
    loss = build(name, actor, value_net)
    out = loss(td)
    actor_key = "loss_actor" if name.startswith("reinforce") else "loss_objective"
    critic_key = "loss_value" if name.startswith("reinforce") else "loss_critic"
    out[actor_key].backward(retain_graph=True)
    assert all(p.grad is None or (p.grad == 0).all() for p in loss.critic_parameters())
    assert any(p.grad is not None and (p.grad != 0).any() for p in loss.actor_parameters())
    loss.zero_grad()
    out[critic_key].backward()
    assert all(p.grad is None or (p.grad == 0).all() for p in loss.actor_parameters())
    assert any(p.grad is not None and (p.grad != 0).any() for p in loss.critic_parameters())


@pytest.mark.parametrize("kind", KINDS)
def test_reinforce_equals_core_formulas(kind):
    actor, value_net = make_actor(kind), critic()
    td = padded_batch(actor)
    m = mask_of(td)
    out = REINFORCELoss(actor, value_net)(td)
    lp = actor_lp(actor, td)
    adv = td["advantage"].squeeze(-1)
    torch.testing.assert_close(out["loss_actor"], mmean(-lp * adv, m))
    v = value_net(td.select("observation").clone())["state_value"].squeeze(-1)
    torch.testing.assert_close(out["loss_value"], mmean((v - td["value_target"].squeeze(-1)) ** 2, m))
    # normalize_advantage: the core's standardize over the valid steps
    out_n = REINFORCELoss(actor, normalize_advantage=True)(td)
    torch.testing.assert_close(out_n["loss_actor"], mmean(-lp * standardize(adv, m), m))


def test_reinforce_default_estimator_is_monte_carlo():
    actor, value_net = discrete_actor(), critic()
    td = padded_batch(actor).exclude("advantage", "value_target")
    loss = REINFORCELoss(actor, value_net, gamma=0.9)
    out = loss(td)
    explicit = MonteCarloEstimator(gamma=0.9, value_network=value_net)(td.clone())
    expected = REINFORCELoss(actor, value_net)(explicit)
    for key in out.keys():
        torch.testing.assert_close(out[key], expected[key])
    assert isinstance(loss.value_estimator, MonteCarloEstimator)
    with pytest.raises(ValueError, match="trajs_per_batch"):
        loss(td.exclude(("collector", "mask")))  # without the mask, the padding looks like cut episodes


@pytest.mark.parametrize("kind", KINDS)
def test_trpo_forward_equals_core_formulas(kind):
    actor = make_actor(kind)
    td = padded_batch(actor)
    m = mask_of(td)
    out = TRPOLoss(actor, critic(), normalize_advantage=False)(td)
    lp, old = actor_lp(actor, td), td["action_log_prob"]
    adv = td["advantage"].squeeze(-1)
    torch.testing.assert_close(out["loss_objective"], mmean(-torch.exp(lp - old) * adv, m))
    torch.testing.assert_close(out["kl_approx"], mmean(kl_estimate(old, lp.detach(), "k3"), m))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("aggregation", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_grpo_equals_core_formulas(kind, aggregation):
    actor = make_actor(kind)
    td = padded_batch(actor)
    m = mask_of(td)
    loss = GRPOLoss(
        actor, clip_epsilon=0.1, clip_epsilon_high=0.3, kl_coeff=0.2, entropy_coeff=0.05, loss_aggregation=aggregation
    )
    with torch.no_grad():  # move the policy away from the reference
        for p in loss.actor_parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = loss(td)
    lp, old = actor_lp(actor, td), td["action_log_prob"]
    adv = td["advantage"].squeeze(-1)
    surrogate, clipped = clipped_surrogate_loss(lp, old, adv, 0.1, 0.3)
    torch.testing.assert_close(out["loss_objective"], aggregate_loss(surrogate, m, aggregation))
    torch.testing.assert_close(out["clip_fraction"], clipped[m].float().mean())
    ref_actor = make_actor(kind)  # same seed: the initial actor is the reference
    ref_lp = actor_lp(ref_actor, td).detach()
    kl = kl_estimate(lp, ref_lp, "k3")
    torch.testing.assert_close(out["loss_kl_to_ref"], 0.2 * aggregate_loss(kl, m, aggregation))
    torch.testing.assert_close(out["kl_to_ref"], kl[m].mean().detach())
    assert out["kl_to_ref"] > 0
    if kind == "discrete":
        ent = actor.get_dist(td).entropy()
        torch.testing.assert_close(out["loss_entropy"], -0.05 * aggregate_loss(ent, m, aggregation))
    # equal-length episodes: grpo and bnpo coincide; unequal ones (LENGTHS) they differ
    if aggregation == "grpo":
        bnpo = GRPOLoss(actor, clip_epsilon=0.1, clip_epsilon_high=0.3, loss_aggregation="bnpo")(td)
        assert not torch.allclose(out["loss_objective"], bnpo["loss_objective"])


def test_grpo_reference_is_frozen_until_update():
    actor = discrete_actor()
    td = padded_batch(actor)
    loss = GRPOLoss(actor, kl_coeff=0.5)
    ref_ids = {id(t) for t in loss.reference_actor_network_params.values(True, True)}
    assert not ref_ids & {id(p) for p in loss.parameters()}
    assert loss(td)["kl_to_ref"] == 0
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss_sum(loss(td)).backward()
        opt.step()
    assert loss(td)["kl_to_ref"] > 1e-4
    loss.update_reference()
    assert loss(td)["kl_to_ref"] == 0
    state = loss.state_dict()
    assert any(k.startswith("reference_actor_network_params") for k in state)


def test_grpo_advantage_module_and_missing_advantage():
    actor = discrete_actor()
    td = padded_batch(actor).exclude("advantage")
    loss = GRPOLoss(actor)
    # as TorchRL's losses: a missing advantage comes from the default estimator (group-relative, on the group_id labels)
    torch.testing.assert_close(
        loss(td.clone())["loss_objective"], GRPOLoss(actor)(GroupRelativeAdvantage()(td.clone()))["loss_objective"]
    )
    loss.make_value_estimator(GroupRelativeAdvantage(group_size=2))
    expected = GRPOLoss(actor)(GroupRelativeAdvantage(group_size=2)(td.clone()))
    out = loss(td)
    torch.testing.assert_close(out["loss_objective"], expected["loss_objective"])


def test_bad_inputs_raise_clear_errors():
    actor = discrete_actor()
    for make, match in [
        (lambda: REINFORCELoss(actor, entropy_coeff=-0.1), "entropy_coeff"),
        (lambda: REINFORCELoss(actor, critic(), critic_coeff=-1.0), "critic_coeff"),
        (lambda: REINFORCELoss(actor, gamma=2.0), "gamma"),
        (lambda: REINFORCELoss(actor, reduction="avg"), "reduction"),
        (lambda: GRPOLoss(actor, clip_epsilon=-0.2), "clip_epsilon"),
        (lambda: GRPOLoss(actor, clip_epsilon_high=-0.2), "clip_epsilon_high"),
        (lambda: GRPOLoss(actor, kl_coeff=-0.01), "kl_coeff"),
        (lambda: GRPOLoss(actor, loss_aggregation="token"), "loss_aggregation"),
        (lambda: TRPOLoss(actor, critic(), max_kl=0.0), "max_kl"),
        (lambda: TRPOLoss(actor, critic(), cg_damping=-1.0), "cg_damping"),
        (lambda: TRPOLoss(actor, critic(), line_search_shrinking_factor=1.5), "shrinking"),
        (lambda: TRPOLoss(actor, actor.module[0]), "share parameters"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            make()
    td = padded_batch(actor)
    loss = GRPOLoss(actor)
    loss.set_keys(sample_log_prob="behaviour_log_prob")
    with pytest.raises(KeyError, match=r"set_keys\(sample_log_prob="):
        loss(td)
    with pytest.raises(RuntimeError, match="no critic"):
        REINFORCELoss(actor).loss_critic(td)


def test_torchrl_value_estimators_plug_in():
    """Any TorchRL estimator works: ValueEstimators.GAE on a fixed-frame batch (REINFORCE as an actor-critic)."""
    from torchrl.objectives.utils import ValueEstimators
    from torchrl.objectives.value import GAE

    actor, value_net = discrete_actor(), critic()
    td = padded_batch(actor).exclude("advantage", "value_target", ("collector", "mask"))
    loss = REINFORCELoss(actor, value_net)
    loss.make_value_estimator(ValueEstimators.GAE, gamma=0.9, lmbda=0.8)
    assert isinstance(loss.value_estimator, GAE)
    out = loss(td)
    expected = GAE(gamma=0.9, lmbda=0.8, value_network=value_net)(td.clone())
    torch.testing.assert_close(out["loss_actor"], (-actor_lp(actor, td) * expected["advantage"].squeeze(-1)).mean())
    with pytest.raises(ValueError, match="critic_network"):
        REINFORCELoss(actor).make_value_estimator(ValueEstimators.GAE)


def test_grpo_on_concatenated_trajectories():
    """traj_format="cat": one flat [sum T_i] batch; episodes delimited by done, same loss as the padded layout."""
    actor = discrete_actor()
    td = padded_batch(actor)
    m = mask_of(td)
    flat = td[m]  # [sum T_i], episodes contiguous
    for aggregation in ("grpo", "dr_grpo", "bnpo"):
        kwargs = {"loss_aggregation": aggregation, "max_length": 5}
        torch.testing.assert_close(
            GRPOLoss(actor, **kwargs)(flat)["loss_objective"], GRPOLoss(actor, **kwargs)(td)["loss_objective"]
        )


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
@pytest.mark.parametrize("empty", ["no_steps", "no_envs"])
def test_empty_batches_give_zero_losses_and_finite_diagnostics(kind, empty):
    actor = make_actor(kind)
    td = padded_batch(actor)
    td = td[:, :0] if empty == "no_steps" else td[:0]
    for module in (GroupRelativeAdvantage(2), MonteCarloEstimator()):
        out = module(td.clone())
        assert out["advantage"].shape == (*td.shape, 1)
    losses = (TRPOLoss(actor, critic()), GRPOLoss(actor, kl_coeff=0.1, entropy_coeff=0.01), REINFORCELoss(actor, critic()))
    for loss in losses:
        out = loss(td.clone())
        assert set(out.keys()) == set(loss.out_keys)
        assert all(bool(torch.isfinite(v).all()) and float(v) == 0.0 for v in out.values())
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()  # a graph: backward works, zero gradients
        assert all(p.grad is None or not p.grad.any() for p in loss.parameters())
    before = [p.detach().clone() for p in actor.parameters()]
    result = TRPOLoss(actor, critic()).trust_region_step(td.clone())
    assert not bool(result["accepted"]) and float(result["kl"]) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, actor.parameters(), strict=True))


def test_set_keys_with_an_unknown_name_lists_the_valid_ones():
    for module in (GRPOLoss(discrete_actor()), TRPOLoss(discrete_actor(), critic()), MonteCarloEstimator()):
        with pytest.raises(ValueError, match=r"unknown key 'advantag' \(did you mean 'advantage'\?\); the keys are: .*value"):
            module.set_keys(advantag="adv")
        module.set_keys(advantage="adv")
        assert module.tensor_keys.advantage == "adv"


def test_coefficients_are_live_after_construction():
    actor = discrete_actor()
    td = padded_batch(actor)
    loss = GRPOLoss(actor)
    assert "loss_kl_to_ref" not in loss(td.clone()).keys() and "loss_entropy" not in loss(td.clone()).keys()
    loss.kl_coeff = 0.5  # as TorchRL's losses: setting a coefficient takes effect, turning its term on
    loss.entropy_coeff = 0.01
    out = loss(td.clone())
    assert {"loss_kl_to_ref", "kl_to_ref", "loss_entropy", "entropy"} <= set(out.keys()) <= set(loss.out_keys)
    assert float(out["loss_entropy"]) < 0
    loss.kl_coeff = 0.0
    assert "loss_kl_to_ref" not in loss(td.clone()).keys()
    reinforce = REINFORCELoss(actor, critic())
    reinforce.entropy_coeff = 0.02
    assert "loss_entropy" in reinforce(td.clone()).keys()


def test_objective_options_are_live_and_checked_when_set():
    actor = discrete_actor()
    td = padded_batch(actor)
    loss = GRPOLoss(actor)
    assert "entropy_mask_fraction" not in loss(td.clone()).keys()
    loss.top_entropy_quantile = 0.5  # a pg_extras.ObjectiveOptions field: re-checked, used by the next call
    out = loss(td.clone())
    assert 0.0 < float(out["entropy_mask_fraction"]) < 1.0
    loss.update_rule = "cispo"
    assert loss.objective_options.update_rule == "cispo" and torch.isfinite(loss(td.clone())["loss_objective"])
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        loss.top_entropy_quantile = 0.0
    assert loss.top_entropy_quantile == 0.5
    for rule in ("pg", "trust_region"):  # GRPOLoss clips or gates the ratio
        with pytest.raises(ValueError, match="'ppo_clip', 'cispo', 'sapo'"):
            GRPOLoss(actor, update_rule=rule)
        with pytest.raises(ValueError, match="'ppo_clip', 'cispo', 'sapo'"):
            loss.update_rule = rule


def test_grpo_make_value_estimator_without_arguments_is_group_relative():
    loss = GRPOLoss(discrete_actor()).make_value_estimator()  # TorchRL's default call: no error at configuration
    assert isinstance(loss._value_estimator, GroupRelativeAdvantage)
    td = padded_batch(discrete_actor())  # labelled by group_id, as GroupedEnv writes it
    out = loss(td)
    assert torch.isfinite(out["loss_objective"])
    sized = GRPOLoss(discrete_actor()).make_value_estimator(group_size=2, mode="return_to_go")
    assert sized._value_estimator.group_size == 2 and sized._value_estimator.mode == "return_to_go"


def test_grpo_loss_accepts_torchrls_names():
    actor = discrete_actor()
    td = padded_batch(actor)
    ours = GRPOLoss(actor, clip_epsilon=0.2, clip_epsilon_high=0.28, kl_coeff=0.1, loss_aggregation="bnpo")
    theirs = GRPOLoss(actor, clip_epsilon=(0.2, 0.28), kl_to_ref_coeff=0.1, aggregation="token_mean")
    a, b = ours(td.clone()), theirs(td.clone())
    for key in a.keys():
        torch.testing.assert_close(a[key], b[key])
    assert GRPOLoss(actor, aggregation="prompt_mean").loss_aggregation == "grpo"
    assert GRPOLoss(actor, aggregation="none")(td.clone())["loss_objective"].shape == td.shape
    with pytest.raises(ValueError, match="one option"):
        GRPOLoss(actor, kl_coeff=0.1, kl_to_ref_coeff=0.2)
    with pytest.raises(ValueError, match="clip_epsilon"):
        GRPOLoss(actor, clip_epsilon=(0.2, 0.28), clip_epsilon_high=0.3)


def test_one_hot_actions_under_a_categorical_actor_are_refused_with_the_fix():
    actor = discrete_actor()
    td = padded_batch(actor)
    td["action"] = torch.nn.functional.one_hot(td["action"], 3)  # GymEnv's default one-hot action spec
    for loss in (GRPOLoss(actor), REINFORCELoss(actor, critic()), TRPOLoss(actor, critic())):
        with pytest.raises(ValueError, match="categorical_action_encoding=True"):
            loss(td.clone())


def test_discounts_in_the_loss_constructor_are_deprecated_and_still_work():
    actor = discrete_actor()
    td = padded_batch(actor).exclude("advantage", "value_target")
    with pytest.warns(DeprecationWarning, match=r"make_value_estimator\(gamma=0.9, lmbda=0.8\)"):
        old = TRPOLoss(actor, critic(), gamma=0.9, lmbda=0.8)
    new = TRPOLoss(actor, critic()).make_value_estimator(gamma=0.9, lmbda=0.8)
    torch.testing.assert_close(old(td.clone())["loss_objective"], new(td.clone())["loss_objective"])
    with pytest.warns(DeprecationWarning, match="REINFORCELoss"):
        REINFORCELoss(actor, critic(), gamma=0.9)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        TRPOLoss(actor, critic())  # the defaults warn nothing
        REINFORCELoss(actor, critic())


def test_out_keys_can_be_set_as_in_torchrl():
    actor = discrete_actor()
    loss = GRPOLoss(actor)
    assert loss.out_keys == ["loss_objective", "clip_fraction", "kl_approx"]
    loss.out_keys = ["kl_approx", "loss_objective"]
    assert loss.out_keys == ["kl_approx", "loss_objective"]
    with pytest.raises(ValueError, match="not outputs of this loss"):
        loss.out_keys = ["loss_value"]
    loss.out_keys = None  # back to the configuration's
    assert "clip_fraction" in loss.out_keys
