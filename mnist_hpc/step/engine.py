"""Train one epoch and evaluate, as in the notebook, with exact global metrics.

Everything arrives as arguments: this module reads no environment, prints nothing and writes
no files. Losses are *sums* over samples, so shards of any size add up exactly.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..data.batches import Batch
from ..data.dataset import Split, eval_batches, to_input
from ..job.layout import DistEnv
from ..job.process_group import all_reduce_sum
from .dropout import set_sample_keys


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


class PassSums(nn.Module):
    """The loss function, also summing what the training pass saw (``--train-metrics pass``):
    plain cross-entropy (the evaluation's loss, without label smoothing), correct predictions
    and samples, of the running model in train mode. The sums stay on the device (no copy per
    step) in a buffer, so that a CUDA graph's capture, which saves and restores the step's
    state, keeps them too; ``take`` makes them global with one all-reduce."""

    def __init__(self, loss_fn: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.loss_fn = loss_fn
        self.register_buffer("sums", torch.zeros(3, dtype=torch.float64, device=device))

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            seen = outputs.detach()
            self.sums[0] += F.cross_entropy(seen, labels, reduction="sum")
            self.sums[1] += (seen.argmax(1) == labels).sum()
            self.sums[2] += len(labels)
        return self.loss_fn(outputs, labels)

    def take(self, env: DistEnv) -> EvalResult:
        """The global sums since the last call (a collective), then zero."""
        sums = all_reduce_sum(self.sums.clone(), env)
        self.sums.zero_()
        loss_sum, correct, count = sums.tolist()
        return EvalResult(loss_sum, correct, int(count))


@dataclass
class EpochResult:
    steps: int  # optimizer steps taken
    samples: int  # global samples trained on (every rank's share)
    stopped: bool  # a stop request ended the epoch early


def train_one_epoch(model: nn.Module, batches: Iterable[Batch],
                    optimizer: torch.optim.Optimizer, loss_fn: nn.Module, world_size: int,
                    precision: Precision,
                    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None,
                    should_stop: Callable[[int], bool] = lambda step: False,
                    on_step: Callable[[int], None] = lambda step: None,
                    graphed: Optional[Callable[[Batch], None]] = None,
                    ) -> EpochResult:
    """One pass over this rank's batches ``(inputs, labels, global batch size, sample keys)``
    (``data.batches.Batch``); the keys go to the dropout layers (``step.dropout``).

    ``loss_fn`` sums over samples; scaling each rank's sum by ``world_size / global size``
    makes DDP's gradient average equal the single-process mean over the global batch, also
    when the batch does not divide evenly. ``should_stop(step)`` is asked after each step.
    ``graphed``: the same step replayed from CUDA graphs (``graphs.GraphedStep``).
    """
    model.train()
    device = next(model.parameters()).device
    steps = samples = 0
    for batch in batches:
        inputs, labels, global_size, keys = batch
        if graphed is not None:
            graphed(batch)
        else:
            set_sample_keys(model, keys)
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
