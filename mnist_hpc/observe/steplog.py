"""The step log: ``steps.jsonl`` every ``--log-every`` steps, and TensorBoard event files
when the ``tensorboard`` package is installed (``pip install mnist_hpc[tensorboard]``).

The loss is averaged over every rank without a synchronisation per step: each step adds its
loss to a tensor on the device (no copy to the host), and every N steps one all-reduce of two
numbers (the loss sum and the sample count) makes it global. That is the only collective the
step log adds, one per N steps. Only rank 0 writes.

``steps.jsonl`` holds one JSON object a line: step (counted over the whole run, from 1),
epoch, loss (mean training loss per sample over the ranks and the last N steps, label smoothing
included), lr, samples_per_s (global, over the last N steps, rank 0's clock), time (Unix).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..job.layout import DistEnv
from ..job.process_group import all_reduce_sum

FILENAME = "steps.jsonl"
TENSORBOARD_DIR = "tensorboard"


def tensorboard_writer(run_dir: Path):
    """A SummaryWriter into ``<run>/tensorboard``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: the step log and metrics.json carry the same numbers
        return None
    return SummaryWriter(str(run_dir / TENSORBOARD_DIR))


class LossTap(nn.Module):
    """The loss function, also adding each step's loss to a running sum on the device."""

    def __init__(self, loss_fn: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        # loss sum, samples; a buffer, so that whatever saves and restores a step's state
        # (a CUDA graph's capture) keeps it too, in place
        self.register_buffer("sums", torch.zeros(2, dtype=torch.float64, device=device))

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(outputs, labels)
        self.sums[0] += loss.detach()
        self.sums[1] += len(labels)
        return loss

    def take(self, env: DistEnv, all_reduce: Callable = all_reduce_sum) -> tuple[float, int]:
        """The global loss sum and sample count since the last call (a collective)."""
        sums = all_reduce(self.sums.clone(), env)
        self.sums.zero_()
        loss_sum, count = sums.tolist()
        return loss_sum, int(count)


class StepLog:
    """Every ``every`` steps: one all-reduce, and on rank 0 a line (and TensorBoard scalars)."""

    def __init__(self, every: int, tap: LossTap, env: DistEnv, run_dir: Path,
                 optimizer: torch.optim.Optimizer) -> None:
        self.every, self.tap, self.env, self.optimizer = every, tap, env, optimizer
        self.file = open(run_dir / FILENAME, "a", buffering=1) if env.is_main else None
        self.tensorboard = tensorboard_writer(run_dir) if env.is_main else None
        self.since = time.perf_counter()

    def step(self, epoch: int, step: int, all_reduce: Callable = all_reduce_sum) -> None:
        """After run-wide step ``step`` (from 1) of ``epoch``; ``all_reduce`` may be a timed
        one, so that the wait counts as communication."""
        if step % self.every:
            return
        loss_sum, count = self.tap.take(self.env, all_reduce)
        now = time.perf_counter()
        record = {"step": step, "epoch": epoch, "loss": loss_sum / max(count, 1),
                  "lr": self.optimizer.param_groups[0]["lr"],
                  "samples_per_s": count / (now - self.since), "time": time.time()}
        self.since = now
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key in ("loss", "lr", "samples_per_s"):
                self.tensorboard.add_scalar(f"train/{key}", record[key], step)

    def restart_clock(self) -> None:
        """Evaluation between epochs is not training time; nor are the steps before a resume."""
        self.since = time.perf_counter()
        self.tap.sums.zero_()

    def epoch(self, curves: dict[str, float], step: int) -> None:
        """The epoch's figures as TensorBoard scalars ``epoch/<name>``; which figures is
        metrics.json's choice (``mnist_hpc.run.metrics_json.epoch_curves``), which holds
        them already."""
        if self.tensorboard is None:
            return
        for name, value in curves.items():
            self.tensorboard.add_scalar(f"epoch/{name}", value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
