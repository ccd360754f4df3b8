"""The TorchRL pipelines on a CUDA device (skipped without GPU): a few updates of each example, and a loss on GPU
equal to the CPU one."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "torchrl"


@pytest.mark.parametrize("script", ["grpo_torchrl", "reinforce_torchrl", "trpo_torchrl"])
@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_examples_train_on_cuda(script, env, tmp_path):
    sys.path.insert(0, str(EXAMPLES))
    try:
        module = importlib.import_module(script)
        result = module.main(
            ["--env", env, "--frames", "2048", "--num-envs", "8", "--device", "cuda", "--logger", "none", "--no-progress",
             "--log-dir", str(tmp_path)]
        )  # fmt: skip
    finally:
        sys.path.remove(str(EXAMPLES))
    assert result == result  # a finite mean return (NaN != NaN)


def test_grpo_loss_on_cuda_equals_cpu():
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from torchrl_helpers import make_actor, padded_batch
    finally:
        sys.path.pop(0)
    from torchrl_pg_extras import GroupRelativeAdvantage, GRPOLoss

    actor = make_actor("discrete")
    batch = GroupRelativeAdvantage(group_size=2)(padded_batch(actor))
    cpu = GRPOLoss(actor)(batch)["loss_objective"]
    gpu = GRPOLoss(actor.to("cuda"))(batch.to("cuda"))["loss_objective"]
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
