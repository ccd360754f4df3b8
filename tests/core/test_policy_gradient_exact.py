"""Policy-gradient estimators against the exact gradient of a small tabular MDP (seed 2.1, 2.2, 2.3).

J(theta) is computed exactly by enumerating every trajectory of a 3-state, 2-action, horizon-4 MDP with a
softmax policy; autograd through that sum gives the exact gradient. Monte-Carlo estimators built on the core's
``returns_to_go`` must agree with it within a few standard errors.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from pg_extras import returns_to_go

S, A, H = 3, 2, 4
N_SAMPLES = 40_000


def make_mdp(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    trans = torch.rand(S, A, S, generator=g, dtype=torch.float64) + 0.1
    trans = trans / trans.sum(-1, keepdim=True)
    reward = torch.randn(S, A, generator=g, dtype=torch.float64)
    theta = 0.5 * torch.randn(S, A, generator=g, dtype=torch.float64)
    return p0, trans, reward, theta


def exact_objective(theta: torch.Tensor, p0, trans, reward, gamma: float) -> torch.Tensor:
    """J(theta) = sum_tau P(tau | theta) R(tau), R = sum_t gamma^t r_t, by enumeration."""
    pi = torch.softmax(theta, -1)
    total = theta.new_zeros(())
    for states in itertools.product(range(S), repeat=H):
        for actions in itertools.product(range(A), repeat=H):
            prob = p0[states[0]]
            ret = 0.0
            for t in range(H):
                prob = prob * pi[states[t], actions[t]]
                if t + 1 < H:
                    prob = prob * trans[states[t], actions[t], states[t + 1]]
                ret = ret + gamma**t * reward[states[t], actions[t]]
            total = total + prob * ret
    return total


def exact_values(theta, trans, reward, gamma):
    """V_t(s) = expected discounted reward-to-go from s at time t (time-dependent, finite horizon)."""
    pi = torch.softmax(theta, -1)
    v = torch.zeros(H + 1, S, dtype=torch.float64)
    for t in reversed(range(H)):
        q = reward + (gamma * (trans @ v[t + 1]) if t + 1 < H else 0.0)
        v[t] = (pi * q).sum(-1)
    return v


def sample(theta, p0, trans, reward, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(theta, -1)
    s = torch.multinomial(p0, n, replacement=True, generator=g)
    states, actions, rewards = [], [], []
    for _ in range(H):
        a = torch.multinomial(pi[s], 1, generator=g).squeeze(1)
        states.append(s)
        actions.append(a)
        rewards.append(reward[s, a])
        s = torch.multinomial(trans[s, a], 1, generator=g).squeeze(1)
    return torch.stack(states), torch.stack(actions), torch.stack(rewards)  # [H, n]


def score(theta, states, actions):
    """Per-step grad of log softmax wrt theta, [H, n, S, A]: 1[s] (onehot(a) - pi(.|s))."""
    pi = torch.softmax(theta, -1)
    onehot_s = torch.nn.functional.one_hot(states, S).to(theta)
    diff = torch.nn.functional.one_hot(actions, A).to(theta) - pi[states]
    return onehot_s[..., :, None] * diff[..., None, :]


@pytest.fixture(scope="module")
def setup():
    p0, trans, reward, theta = make_mdp()
    return p0, trans, reward, theta


def _check_unbiased(per_sample: torch.Tensor, exact: torch.Tensor, n_se: float = 4.5) -> None:
    mean = per_sample.mean(0)
    se = per_sample.std(0) / per_sample.shape[0] ** 0.5
    z = (mean - exact).abs() / (se + 1e-12)
    assert bool((z < n_se).all()), f"max z-score {z.max():.2f}: estimate {mean} vs exact {exact}"


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_estimators_match_exact_gradient(setup, gamma):
    p0, trans, reward, theta = setup
    th = theta.clone().requires_grad_(True)
    (exact_grad,) = torch.autograd.grad(exact_objective(th, p0, trans, reward, gamma), th)
    states, actions, rewards = sample(theta, p0, trans, reward, N_SAMPLES)
    sc = score(theta, states, actions)  # [H, n, S, A]
    terminated = torch.zeros(H, N_SAMPLES, dtype=torch.bool)
    terminated[-1] = True
    discount = gamma ** torch.arange(H, dtype=torch.float64)[:, None]
    # Whole-trajectory form: sum_t grad log pi_t * R(tau)   (seed 2.1, first display)
    total_return = (discount * rewards).sum(0)
    est_full = (sc.sum(0) * total_return[:, None, None]).reshape(N_SAMPLES, -1)
    # Return-to-go form with the core's G_t: sum_t gamma^t grad log pi_t G_t (unbiased for the discounted objective)
    g_t = returns_to_go(rewards, terminated, gamma=gamma)
    est_rtg = (sc * (discount * g_t)[..., None, None]).sum(0).reshape(N_SAMPLES, -1)
    _check_unbiased(est_full, exact_grad.reshape(-1))
    _check_unbiased(est_rtg, exact_grad.reshape(-1))
    # Return-to-go removes the past rewards' noise: lower total variance (seed 2.1).
    assert est_rtg.var(0).sum() < est_full.var(0).sum()


def test_wrong_returns_are_detected(setup):
    """Sanity of the harness: using reward-so-far instead of reward-to-go is biased and must fail the check."""
    p0, trans, reward, theta = setup
    th = theta.clone().requires_grad_(True)
    (exact_grad,) = torch.autograd.grad(exact_objective(th, p0, trans, reward, 1.0), th)
    states, actions, rewards = sample(theta, p0, trans, reward, N_SAMPLES)
    sc = score(theta, states, actions)
    past = torch.cumsum(rewards, 0)
    est = (sc * past[..., None, None]).sum(0).reshape(N_SAMPLES, -1)
    with pytest.raises(AssertionError):
        _check_unbiased(est, exact_grad.reshape(-1))


def test_baseline_is_unbiased_and_lowers_variance(setup):
    p0, trans, reward, theta = setup
    gamma = 1.0
    th = theta.clone().requires_grad_(True)
    (exact_grad,) = torch.autograd.grad(exact_objective(th, p0, trans, reward, gamma), th)
    values = exact_values(theta, trans, reward, gamma)  # [H+1, S]
    states, actions, rewards = sample(theta, p0, trans, reward, N_SAMPLES, seed=3)
    sc = score(theta, states, actions)
    terminated = torch.zeros(H, N_SAMPLES, dtype=torch.bool)
    terminated[-1] = True
    g_t = returns_to_go(rewards, terminated, gamma=gamma)
    baseline = values[torch.arange(H)[:, None], states]  # V_t(s_t)
    est_plain = (sc * g_t[..., None, None]).sum(0).reshape(N_SAMPLES, -1)
    est_base = (sc * (g_t - baseline)[..., None, None]).sum(0).reshape(N_SAMPLES, -1)
    _check_unbiased(est_base, exact_grad.reshape(-1))
    # seed 2.3: the baseline measurably lowers the variance (here by more than 10 %).
    assert est_base.var(0).sum() < 0.9 * est_plain.var(0).sum()


def test_action_independent_term_has_zero_expectation(setup):
    """seed 2.2: E[sum_t grad log pi(a_t|s_t) f(s_t)] = 0 for any f of the state."""
    p0, trans, reward, theta = setup
    f = torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64)
    states, actions, _ = sample(theta, p0, trans, reward, N_SAMPLES, seed=5)
    sc = score(theta, states, actions)
    est = (sc * f[states][..., None, None]).sum(0).reshape(N_SAMPLES, -1)
    _check_unbiased(est, torch.zeros(S * A, dtype=torch.float64))
    # ... whereas an action-dependent term is not zero-mean.
    fa = torch.tensor([1.0, -1.0], dtype=torch.float64)
    est_a = (sc * fa[actions][..., None, None]).sum(0).reshape(N_SAMPLES, -1)
    with pytest.raises(AssertionError):
        _check_unbiased(est_a, torch.zeros(S * A, dtype=torch.float64))


def test_entropy_estimate_without_closed_form_has_the_entropys_gradient():
    # pg_extras.entropy_or_estimate: a fresh reparameterised sample gives the entropy's gradient (d H / d log_std = 1 per
    # dimension of a Gaussian); the stored action's -log pi(a) has zero expected gradient on-policy
    from pg_extras import entropy_or_estimate

    torch.manual_seed(0)
    log_std = torch.zeros(20000, 2, requires_grad=True)
    normal = torch.distributions.Normal(torch.zeros(20000, 2), log_std.exp())
    fresh = entropy_or_estimate(None, lambda: normal.log_prob(normal.rsample()).sum(-1))
    (grad,) = torch.autograd.grad(fresh.mean(), log_std)
    torch.testing.assert_close(grad.sum(0), torch.ones(2), atol=0.05, rtol=0)  # exact: 1 per dimension
    normal = torch.distributions.Normal(torch.zeros(20000, 2), log_std.exp())
    stored = normal.sample()
    (grad_stored,) = torch.autograd.grad(-normal.log_prob(stored).sum(-1).mean(), log_std)
    assert grad_stored.sum(0).abs().max() < 0.05  # ~0: the bonus would do nothing
    closed = torch.ones(3)
    assert entropy_or_estimate(closed, lambda: 1 / 0) is closed  # a closed form is used as is, nothing is sampled
