"""Core functions on a CUDA device equal their CPU results (skipped without GPU)."""

from __future__ import annotations

import copy

import pytest
import torch

from pg_extras import estimate_advantages, trust_region_step

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _trpo_step(device: str, net: torch.nn.Module, obs: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor):
    net = copy.deepcopy(net).to(device)
    obs, actions, adv = obs.to(device), actions.to(device), adv.to(device)
    with torch.no_grad():
        old = torch.log_softmax(net(obs), -1)

    def evaluate():
        logp = torch.log_softmax(net(obs), -1)
        ratio = torch.exp(logp.gather(1, actions[:, None])[:, 0] - old.gather(1, actions[:, None])[:, 0])
        kl = (old.exp() * (old - logp)).sum(-1).mean()
        return (ratio * adv).mean(), kl

    result = trust_region_step(list(net.parameters()), evaluate, max_kl=0.01)
    return result, torch.nn.utils.parameters_to_vector(net.parameters()).cpu()


def test_trust_region_step_on_gpu_equals_cpu():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
    obs, actions, adv = torch.randn(256, 4).double(), torch.randint(0, 3, (256,)), torch.randn(256).double()
    cpu_result, cpu_params = _trpo_step("cpu", net, obs, actions, adv)
    gpu_result, gpu_params = _trpo_step("cuda", net, obs, actions, adv)
    assert cpu_result.accepted and gpu_result.accepted and cpu_result.steps_tried == gpu_result.steps_tried
    torch.testing.assert_close(gpu_params, cpu_params, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("estimator", ["gae", "mc", "baseline", "group"])
def test_estimators_on_gpu_equal_cpu(estimator):
    torch.manual_seed(0)
    rewards = torch.randn(64, 4)
    terminated = torch.zeros(64, 4, dtype=torch.bool)
    terminated[15::16] = True
    values, next_values = torch.randn(64, 4), torch.randn(64, 4)
    episode = torch.cumsum(terminated.long(), 0) - terminated.long()  # index of each step's episode in its column
    group_ids = episode * 2 + torch.arange(4) // 2  # columns (0, 1) and (2, 3) play the members of a group
    kwargs = dict(values=values, next_values=next_values, group_ids=group_ids, gamma=0.99)
    cpu = estimate_advantages(estimator, rewards, terminated, **kwargs)
    gpu = estimate_advantages(
        estimator, rewards.cuda(), terminated.cuda(), **{k: v.cuda() if torch.is_tensor(v) else v for k, v in kwargs.items()}
    )
    torch.testing.assert_close(gpu.advantages.cpu(), cpu.advantages, rtol=1e-5, atol=1e-6)
