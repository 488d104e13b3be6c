"""CUDA graphs, the parts a CPU can check: where the graphed step is used or refused, and the
capturable optimizer's learning rate (a tensor the schedule fills, plain in checkpoints). The
capture itself runs in test_gpu.py."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc.config.options import RunConfig
from mnist_hpc.errors import UsageError
from mnist_hpc.step import graphs, recipe


@pytest.mark.parametrize("setting, device, optimizer, world, backend, compile, expected", [
    ("auto", "cuda", "adam", 1, None, False, True),     # one process on one GPU
    ("auto", "cuda", "adamw", 1, None, False, True),
    ("auto", "cpu", "adam", 1, None, False, False),
    ("auto", "cuda", "sgd", 1, None, False, False),     # no capturable SGD
    ("auto", "cuda", "adam", 2, "nccl", False, False),  # DDP capture: opt-in until measured
    ("on", "cuda", "adam", 2, "nccl", False, True),
    ("auto", "cuda", "adam", 2, "gloo", False, False),
    ("auto", "cuda", "adam", 1, None, True, False),     # compile: opt-in
    ("on", "cuda", "adam", 1, None, True, True),
    ("off", "cuda", "adam", 1, None, False, False),
])
def test_where_the_step_runs_as_graphs(setting, device, optimizer, world, backend, compile,
                                       expected):
    assert graphs.use_graphs(setting, device, optimizer, world, backend, compile) is expected


@pytest.mark.parametrize("device, optimizer, world, backend, message", [
    ("cpu", "adam", 1, None, "CUDA graphs need --device cuda"),
    ("mps", "adam", 1, None, "CUDA graphs need --device cuda"),
    ("cuda", "sgd", 1, None, "CUDA graphs need a capturable optimizer (adam or adamw), not sgd"),
    ("cuda", "adam", 2, "gloo",
     "CUDA graphs cannot capture gloo's all-reduce, which runs on the host"),
])
def test_graphs_on_where_they_cannot_run_are_refused(device, optimizer, world, backend, message):
    with pytest.raises(UsageError) as raised:
        graphs.use_graphs("on", device, optimizer, world, backend, False)
    assert str(raised.value) == f"{message}; use --cuda-graphs auto or off"


def test_auto_precision_is_bf16_only_with_graphs():
    auto = RunConfig(precision="auto")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert recipe.precision_for(auto, cuda, graphs=True).dtype == torch.bfloat16
    assert recipe.precision_for(auto, cuda, graphs=False).dtype is None
    assert recipe.precision_for(auto, cpu).dtype is None
    assert recipe.precision_for(RunConfig(precision="bf16"), cpu).dtype == torch.bfloat16


def test_the_schedule_fills_the_tensor_lr_and_checkpoints_keep_a_float():
    config = RunConfig(schedule="onecycle", epochs=1)
    model = torch.nn.Linear(3, 2)
    optimizer = recipe.build_optimizer(config, model.parameters(), 0.01)
    scheduler = recipe.build_scheduler(config, optimizer, 0.01, total_steps=10)
    eager = [group["lr"] for group in optimizer.param_groups]
    graphs.make_capturable(optimizer, torch.device("cpu"))
    [lr] = [group["lr"] for group in optimizer.param_groups]
    assert isinstance(lr, torch.Tensor) and lr.item() == pytest.approx(eager[0])
    assert optimizer.param_groups[0]["capturable"] is True
    optimizer.step()  # no gradients: nothing moves, but the schedule's order is kept
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is lr  # filled in place: a graph reads this memory
    assert lr.item() == pytest.approx(scheduler.get_last_lr()[0]) and lr.item() > eager[0]
    [saved] = optimizer.state_dict()["param_groups"]
    assert saved["lr"] == pytest.approx(lr.item()) and type(saved["lr"]) is float
    assert saved["capturable"] is False and optimizer.param_groups[0]["lr"] is lr
