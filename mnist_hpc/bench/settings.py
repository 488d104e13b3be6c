"""What one bench run measures with: the device, the data, how long and how often."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import UsageError

# weights and dropout of every notebook-style model and throughput case (the seed preset's
# --seed, so both sides of the epochs comparison start alike); the split keeps the notebook's 55
SPLIT_SEED = 55  # the notebook's random_split seed
SEED = 0


@dataclass(frozen=True)
class Settings:
    device: torch.device
    data_dir: str
    repeats: int
    samples: int  # per timed repeat, per case
    warmup: int  # untimed steps before the first repeat
    limit: Optional[int]  # keep the first N images of each split (--quick)
    epochs: Optional[int]  # override the presets' epochs (--quick)
    evals_per_epoch: int  # test evaluations per epoch in the time-to-accuracy runs
    targets: tuple[float, ...]
    eval_batch_size: Optional[int] = None  # override the presets' (package runs only)


def settings_from(args: argparse.Namespace, device: torch.device) -> Settings:
    """Settings from the command line; the defaults depend on the device (a GPU needs more
    samples and warm-up to time anything) and on --quick."""
    gpu = device.type == "cuda"
    for name in ("repeats", "samples", "warmup", "evals_per_epoch", "epochs", "limit",
                 "eval_batch_size", "seeds"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    try:
        targets = tuple(float(t) for t in args.targets.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--targets must be comma-separated percentages, got {args.targets!r}")
    if args.quick:
        return Settings(device, args.data_dir, repeats=1, samples=args.samples or 256,
                        warmup=1 if args.warmup is None else args.warmup,
                        limit=args.limit or 512, epochs=args.epochs or 1,
                        evals_per_epoch=1, targets=targets, eval_batch_size=args.eval_batch_size)
    return Settings(device, args.data_dir, repeats=args.repeats,
                    samples=args.samples or (49152 if gpu else 4096),
                    warmup=args.warmup if args.warmup is not None else (20 if gpu else 2),
                    limit=args.limit, epochs=args.epochs,
                    evals_per_epoch=args.evals_per_epoch, targets=targets,
                    eval_batch_size=args.eval_batch_size)
