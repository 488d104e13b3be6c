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
from typing import Iterator

import torch
from torch import nn

from . import checkpoint, data, engine


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
    rng = checkpoint.rng_state(device)
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
        checkpoint.set_rng_state(rng, device)


def shapes_of_epoch(n: int, global_batch: int, rank: int, world_size: int, seed: int,
                    epoch: int, shuffle: bool) -> list[data.Step]:
    """One step for each distinct global batch size of an epoch (the full batch and a ragged
    last one): the same number on every rank, so DDP's collectives pair up."""
    first: dict[int, data.Step] = {}
    for step in data.train_steps(n, global_batch, rank, world_size, seed, epoch, shuffle):
        first.setdefault(step.global_size, step)
    return list(first.values())


def warm_up(run) -> float:
    """On CUDA: the run's training step (``run.step``: graphed, or None for the eager one)
    taken once per batch shape and every split evaluated once, all undone; the seconds it
    took. Elsewhere: 0.0, nothing done."""
    if run.device.type != "cuda":
        return 0.0
    engine.synchronize(run.device)
    started = time.perf_counter()
    config, env, recipe = run.config, run.env, run.recipe
    steps = shapes_of_epoch(len(run.splits.train), run.global_batch, env.rank, env.world_size,
                            config.seed, run.start_epoch, config.shuffle)
    batches = engine.device_batches(run.splits.train, [(s.local, s.global_size) for s in steps],
                                    recipe.precision)
    with preserved(run.model, recipe.optimizer, run.device):
        engine.train_one_epoch(run.model, batches, recipe.optimizer, recipe.loss_fn,
                               env.world_size, recipe.precision, graphed=run.step)
    for split in (run.splits.train, run.splits.val, run.splits.test):
        run.evaluate(split)
    engine.synchronize(run.device)
    return time.perf_counter() - started
