"""Builders shared by the TorchRL adapter tests: small actors / critics and hand-made rollout tensordicts."""

from __future__ import annotations

import copy

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator

OBS_DIM = 3
N_ACTIONS = 3
ACT_DIM = 2


def discrete_actor(seed: int = 0) -> ProbabilisticActor:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(OBS_DIM, 16), nn.Tanh(), nn.Linear(16, N_ACTIONS))
    return ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        return_log_prob=True,
    )


def continuous_actor(seed: int = 0) -> ProbabilisticActor:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(OBS_DIM, 16), nn.Tanh(), nn.Linear(16, 2 * ACT_DIM), NormalParamExtractor())
    return ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        return_log_prob=True,
    )


def make_actor(kind: str, seed: int = 0) -> ProbabilisticActor:
    return discrete_actor(seed) if kind == "discrete" else continuous_actor(seed)


def critic(seed: int = 1) -> ValueOperator:
    torch.manual_seed(seed)
    return ValueOperator(nn.Sequential(nn.Linear(OBS_DIM, 16), nn.Tanh(), nn.Linear(16, 1)), in_keys=["observation"])


LENGTHS = (5, 3, 4, 2)  # four padded episodes (rows), two groups of two


def padded_batch(actor: ProbabilisticActor, seed: int = 0, lengths=LENGTHS, perturb: float = 0.3) -> TensorDict:
    """``[E, L]`` padded complete episodes, as ``Collector(trajs_per_batch=E)`` yields them.

    Actions and their log-probs come from ``actor``; the stored log-probs are perturbed (an older policy) so that
    importance ratios differ from 1. Padding steps hold garbage (they must not matter).
    """
    g = torch.Generator().manual_seed(seed)
    E, L = len(lengths), max(lengths)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    last = torch.arange(L)[None, :] == (torch.tensor(lengths)[:, None] - 1)
    terminated = last.clone()
    terminated[1] = False  # episode 1 is a time-limit truncation
    truncated = last & ~terminated
    td = TensorDict(
        {
            "observation": torch.randn(E, L, OBS_DIM, generator=g),
            "group_id": (torch.arange(E) // 2)[:, None, None].expand(E, L, 1).clone(),
            "next": {
                "observation": torch.randn(E, L, OBS_DIM, generator=g),
                "reward": torch.randn(E, L, 1, generator=g),
                "done": last[..., None].clone(),
                "terminated": terminated[..., None],
                "truncated": truncated[..., None],
            },
            "collector": {"mask": mask},
        },
        batch_size=[E, L],
    )
    with torch.no_grad():
        td = actor(td)
        lp = td.get("action_log_prob")
        td.set("action_log_prob", lp + perturb * torch.randn(lp.shape, generator=g))
    td.set("advantage", torch.randn(E, L, 1, generator=g))
    td.set("value_target", torch.randn(E, L, 1, generator=g))
    # garbage in the padding: large values everywhere a masked step is read
    pad = ~mask
    td["advantage"][pad] = 1e3
    td["value_target"][pad] = -1e3
    td["observation"][pad] = 5.0
    return td


def clone_module(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)


def grads(params) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in params]


def zero_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None
