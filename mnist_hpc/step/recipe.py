"""A run's recipe built from a RunConfig in one place: model, optimizer, schedule, precision,
loss and seeds. ``train`` and ``bench`` both build from here, so a benchmark measures exactly
what a training run does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .. import seeds
from ..config.options import RunConfig
from ..config.resolve import precision_ran
from . import sync_batchnorm
from .engine import PassSums, Precision
from .models import build_model


@dataclass
class Recipe:
    """What a training loop needs. ``model`` is ``raw_model`` compiled or not, before any DDP
    wrapping; checkpoints and evaluation use ``raw_model``."""

    raw_model: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    precision: Precision
    loss_fn: nn.Module
    lr: float

    @property
    def pass_sums(self) -> Optional[PassSums]:
        """What the training pass summed, where the config asks for it (``--train-metrics``)."""
        return self.loss_fn if isinstance(self.loss_fn, PassSums) else None


def build_optimizer(config: RunConfig, params, lr: float) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def build_scheduler(config: RunConfig, optimizer, lr: float, total_steps: int):
    if config.schedule == "constant":
        return None
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=total_steps, pct_start=config.warmup_fraction,
        anneal_strategy="linear", cycle_momentum=False)


def precision_for(config: RunConfig, device: torch.device, graphs: bool = False) -> Precision:
    """``auto``: bf16 only where it was measured to pay, a CUDA-graphed step (on one H200,
    batch 512: 427k vs 313k samples/s fp32); eager, autocast's extra launches made it slower
    than fp32 (187k vs 229k), and on CPU fp32 keeps the notebook's numbers."""
    use_bf16 = precision_ran(config.precision, graphs) == "bf16"
    return Precision(dtype=torch.bfloat16 if use_bf16 else None,
                     channels_last=config.channels_last, normalize=config.normalize)


def build(config: RunConfig, device: torch.device, steps_per_epoch: int, world_size: int = 1,
          graphs: bool = False) -> Recipe:
    """The recipe of one rank (``graphs``: its step will run as CUDA graphs). Initial weights
    come from ``--seed`` alone (the same on every rank); dropout is keyed per sample
    (step.dropout), so no rank draws from a stream of its own. With ``sync_bn`` and
    several ranks, BatchNorm layers normalise over the global batch (sync_batchnorm.py)."""
    # process-wide switches, set either way so that a run in the same process never inherits
    # the last one's (CUBLAS_WORKSPACE_CONFIG, which cuBLAS also needs, is set by train.main)
    if torch.are_deterministic_algorithms_enabled() != config.deterministic:
        torch.use_deterministic_algorithms(config.deterministic)  # imports torch._inductor
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = config.deterministic
        # fixed shapes: pick the fastest kernels once, unless they must be the same every run
        torch.backends.cudnn.benchmark = not config.deterministic
    torch.manual_seed(seeds.stream("init", config.seed, config.split_seed))
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    raw_model = build_model(config.model, config.dropout).to(device, memory_format=memory_format)
    if config.sync_bn and world_size > 1:  # the process group exists: train.py makes it first
        sync_batchnorm.convert(raw_model)
    model = torch.compile(raw_model) if config.compile else raw_model
    lr = config.lr * (world_size if config.scale_lr else 1)
    optimizer = build_optimizer(config, raw_model.parameters(), lr)
    scheduler = build_scheduler(config, optimizer, lr, config.epochs * steps_per_epoch)
    loss_fn: nn.Module = nn.CrossEntropyLoss(reduction="sum",
                                             label_smoothing=config.label_smoothing)
    if config.train_metrics == "pass":
        loss_fn = PassSums(loss_fn, device)
    return Recipe(raw_model, model, optimizer, scheduler, precision_for(config, device, graphs),
                  loss_fn, lr)
