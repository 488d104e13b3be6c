"""The timed warm-up before epoch 0: every one-time cost of a GPU run paid outside the epochs'
clocks, without changing what the run computes.

One-time work on CUDA (the context, cuDNN and cuBLAS set-up, cudnn.benchmark's autotuning
of each shape, graph capture, compile) otherwise lands in epoch 0's ``train_s`` and
``eval_s``. Here each distinct training batch shape takes one step and each split is
evaluated once, inside ``preserved``, which puts the weights, optimizer state and RNG back
as they were, so the run's numbers are those of a run without warm-up. On a CPU there is no
such cost worth the time: the warm-up is skipped there and CPU runs stay exactly as before.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional

import torch
from torch import nn

from .. import seeds
from . import engine
from .recipe import Recipe


@contextmanager
def preserved(model: nn.Module, optimizer: torch.optim.Optimizer,
              device: torch.device) -> Iterator[None]:
    """Whatever trains inside leaves no trace: weights, buffers, optimizer state and RNG are
    restored, gradients cleared. In place, because a CUDA graph captured inside keeps the
    addresses of the tensors it was captured with. Optimizer state that did not exist before
    (a fresh Adam's moments) is zeroed, which is what Adam and SGD start from."""
    weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    states = {param: {key: value.detach().clone() for key, value in state.items()
                      if isinstance(value, torch.Tensor)}
              for param, state in optimizer.state.items()}
    rng = seeds.rng_state(device)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                tensor.copy_(weights[name])
            for param, state in optimizer.state.items():
                saved = states.get(param, {})
                for key, value in state.items():
                    if isinstance(value, torch.Tensor):
                        value.copy_(saved[key]) if key in saved else value.zero_()
        optimizer.zero_grad(set_to_none=True)
        seeds.set_rng_state(rng, device)


def warm_up(model: nn.Module, recipe: Recipe, graphed: Optional[Callable],
            batches: Callable[[], Iterable], evaluate_splits: Callable[[], None],
            world_size: int, device: torch.device) -> float:
    """On CUDA: the training step (``graphed``, or None for the eager one) taken on each of
    ``batches()`` (one per batch shape) and ``evaluate_splits()`` run, all undone; the seconds
    it took. Elsewhere: 0.0, nothing done."""
    if device.type != "cuda":
        return 0.0
    engine.synchronize(device)
    started = time.perf_counter()
    with preserved(model, recipe.optimizer, device):
        engine.train_one_epoch(model, batches(), recipe.optimizer, recipe.loss_fn, world_size,
                               recipe.precision, graphed=graphed)
    evaluate_splits()
    engine.synchronize(device)
    return time.perf_counter() - started
