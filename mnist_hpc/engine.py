"""Train one epoch and evaluate, as in the notebook, with exact global metrics.

Everything arrives as arguments: this module reads no environment, prints nothing and writes
no files. Losses are *sums* over samples, so shards of any size add up exactly.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import torch
import torch.distributed as dist
from torch import nn

from .augment import EpochTransforms
from .data import MEAN, STD, Split, eval_batches, to_input
from .dist import all_reduce_sum
from .launcher import DistEnv


@dataclass(frozen=True)
class Precision:
    """How batches are fed: autocast dtype (None: fp32), input layout and scaling."""

    dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    normalize: bool = False

    def autocast(self, device: torch.device, cache: bool = True):
        """``cache=False`` inside a CUDA graph capture, whose casts must not be reused."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype, cache_enabled=cache)


def synchronize(device: torch.device) -> None:
    """The clock is read only once the GPU has finished the work being timed."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class EvalResult:
    """Global sums over a whole split: exact, whatever the number of ranks."""

    loss_sum: float
    correct: float
    count: int

    @property
    def accuracy(self) -> float:
        """Percent, as in the notebook's history."""
        return 100.0 * self.correct / self.count

    @property
    def loss(self) -> float:
        """Mean cross-entropy per sample."""
        return self.loss_sum / self.count


@dataclass
class EpochResult:
    steps: int  # optimizer steps taken
    samples: int  # global samples trained on (every rank's share)
    stopped: bool  # a stop request ended the epoch early


def train_one_epoch(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, int]],
                    optimizer: torch.optim.Optimizer, loss_fn: nn.Module, world_size: int,
                    precision: Precision,
                    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
                    should_stop: Callable[[int], bool] = lambda step: False,
                    on_step: Callable[[int], None] = lambda step: None,
                    graphed: Optional[Callable[[torch.Tensor, torch.Tensor, int], None]] = None,
                    ) -> EpochResult:
    """One pass over this rank's batches ``(inputs, labels, global batch size)``.

    ``loss_fn`` sums over samples; scaling each rank's sum by ``world_size / global size``
    makes DDP's gradient average equal the single-process mean over the global batch, also
    when the batch does not divide evenly. ``should_stop(step)`` is asked after each step.
    ``graphed``: the same step replayed from CUDA graphs (``graphs.GraphedStep``).
    """
    model.train()
    device = next(model.parameters()).device
    steps = samples = 0
    for inputs, labels, global_size in batches:
        if graphed is not None:
            graphed(inputs, labels, global_size)
        else:
            with precision.autocast(device):
                outputs = model(inputs)
            loss = loss_fn(outputs.float(), labels) * (world_size / global_size)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        steps += 1
        samples += global_size
        on_step(steps)
        if should_stop(steps):
            return EpochResult(steps, samples, stopped=True)
    return EpochResult(steps, samples, stopped=False)


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, shard: range, env: DistEnv, precision: Precision,
             batch_size: int) -> EvalResult:
    """Eval-mode loss and accuracy of this rank's contiguous shard, all-reduced into exact
    global sums. The loss is plain cross-entropy (no label smoothing): the notebook's metric."""
    model.eval()
    device = next(model.parameters()).device
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)  # exact at any size
    images = split.images[shard.start:shard.stop]
    labels = split.labels[shard.start:shard.stop]
    # on CUDA each new shape costs autotuning: equal batches there (sums stay exact); on CPU
    # the batches are as they always were, so CPU numbers do not move
    for part in eval_batches(len(labels), batch_size, balanced=device.type == "cuda"):
        inputs = to_input(images[part], precision.normalize, precision.channels_last)
        with precision.autocast(device):
            outputs = model(inputs).float()
        loss_sum += loss_fn(outputs, labels[part])
        correct += (outputs.argmax(1) == labels[part]).sum()
    # the count is known on the host; one tensor, one all-reduce, one device-to-host copy
    sums = torch.stack([loss_sum, correct.double(),
                        torch.tensor(float(len(labels)), dtype=torch.float64, device=device)])
    all_reduce_sum(sums, env)
    loss_sum, correct, count = sums.tolist()
    return EvalResult(loss_sum, correct, int(count))


def device_batches(split: Split, positions: Iterable[tuple[torch.Tensor, int]],
                   precision: Precision, transforms: Optional[EpochTransforms] = None
                   ) -> Iterable[tuple[torch.Tensor, torch.Tensor, int]]:
    """Batches from a split resident on the device: an index slice, cast on the device.
    ``transforms`` (augment.for_epoch) augments each image by its position in the split.

    The epoch's indices go to the device in one copy: a copy from pageable host memory per
    step would wait for the GPU to drain before each step, and the host could never run ahead.
    """
    positions = list(positions)
    if not positions:
        return
    device = split.images.device
    lengths = [len(local) for local, _ in positions]
    indices = torch.cat([local for local, _ in positions]).to(device)
    for index, (_, global_size) in zip(torch.split(indices, lengths), positions):
        images = split.images[index]
        if transforms is not None:
            images = transforms.apply(images, index)
        inputs = to_input(images, precision.normalize, precision.channels_last)
        yield inputs, split.labels[index], global_size


def loader_batches(loader: Iterable, sizes: Iterable[int], device: torch.device,
                   precision: Precision) -> Iterable[tuple[torch.Tensor, torch.Tensor, int]]:
    """Batches from the torchvision DataLoader (already ToTensor'd), moved to the device."""
    for (inputs, labels), global_size in zip(loader, sizes):
        inputs = inputs.to(device)
        if precision.normalize:
            inputs = (inputs - MEAN) / STD
        if precision.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        yield inputs, labels.to(device), global_size


@dataclass
class CommTimer:
    """Wall time during which at least one gradient all-reduce was in flight.

    Measured by a DDP communication hook from launch to completion of each bucket's
    all-reduce; overlapping buckets are counted once. It overlaps backward compute, so it is
    an upper bound on what communication costs the step, not a share of it. Exact on gloo,
    whose futures complete when the data has arrived; not used on NCCL, whose futures
    complete when the kernel is queued.
    """

    intervals: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # when the latest all-reduce was launched: the backward pass has produced every gradient
    # once the step's last bucket launches, so what the step waits after it is communication
    last_start: float = float("-inf")

    def take_seconds(self) -> float:
        """Union length of the intervals recorded since the last call, then forget them."""
        with self.lock:
            spans, self.intervals = sorted(self.intervals), []
        total, end = 0.0, float("-inf")
        for start, stop in spans:
            if stop > end:
                total += stop - max(start, end)
                end = stop
        return total


def timed_allreduce_hook(timer, bucket):
    """DDP's default all-reduce (average over ranks), timed. (Unannotated: DDP checks the
    annotations at run time and rejects the strings that postponed evaluation makes.)"""
    start = timer.last_start = time.perf_counter()
    tensor = bucket.buffer().div_(dist.get_world_size())
    future = dist.all_reduce(tensor, async_op=True).get_future()

    def done(fut: torch.futures.Future) -> torch.Tensor:
        with timer.lock:
            timer.intervals.append((start, time.perf_counter()))
        return fut.value()[0]

    return future.then(done)
