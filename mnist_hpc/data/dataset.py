"""MNIST as splits, shards and batches (the files themselves: ``mnist_files``).

Each split is one uint8 tensor (N, 28, 28) plus int64 labels. A batch is an index slice turned
into float in [0, 1] (``/255``, as torchvision's ToTensor does) on the training device. This
module knows of ranks only through the (rank, world_size) it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from ..errors import UsageError
from .mnist_files import load_raw

MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel statistics, for --normalize


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class MNISTSplits:
    train: Split
    val: Split
    test: Split
    train_indices: torch.Tensor  # positions of train/val in the 60k file, for the torchvision path
    val_indices: torch.Tensor


def split_indices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's 80/20 split, by the very call it makes."""
    train, val = torch.utils.data.random_split(range(n), [0.8, 0.2],
                                               generator=torch.Generator().manual_seed(seed))
    return torch.tensor(train.indices), torch.tensor(val.indices)


def load_splits(data_dir: str | Path, split_seed: int = 55, limit: Optional[int] = None,
                download: bool = False) -> MNISTSplits:
    """Train/val (80/20 of the 60k file) and the 10k test split; ``limit`` keeps the first N
    images of each split."""
    raw = load_raw(data_dir, download)
    images, labels = raw["train-images-idx3-ubyte"], raw["train-labels-idx1-ubyte"]
    train_idx, val_idx = split_indices(len(labels), split_seed)
    if limit is not None:
        train_idx, val_idx = train_idx[:limit], val_idx[:limit]
    return MNISTSplits(
        train=Split(images[train_idx], labels[train_idx]),
        val=Split(images[val_idx], labels[val_idx]),
        test=_test_split(raw, limit),
        train_indices=train_idx,
        val_indices=val_idx,
    )


def _test_split(raw: dict, limit: Optional[int]) -> Split:
    """The 10k test file, or its first ``limit`` images."""
    test_n = len(raw["t10k-labels-idx1-ubyte"]) if limit is None else limit
    return Split(raw["t10k-images-idx3-ubyte"][:test_n].clone(),  # the parsed files are shared
                 raw["t10k-labels-idx1-ubyte"][:test_n].clone())


def load_test_split(data_dir: str | Path, limit: Optional[int] = None,
                    download: bool = False) -> Split:
    """The test split exactly as ``load_splits`` gives it (``python -m mnist_hpc.evaluate``)."""
    return _test_split(load_raw(data_dir, download), limit)


def to_input(images: torch.Tensor, normalize: bool = False,
             channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28) in [0, 1], the values ToTensor gives."""
    x = images.unsqueeze(1).float().div_(255)
    if normalize:
        x = x.sub_(MEAN).div_(STD)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def shard_range(n: int, rank: int, world_size: int) -> range:
    """Contiguous, disjoint shards covering 0..n-1 exactly; sizes differ by at most one.
    Used for evaluation: no padding, no sample seen twice."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def eval_batches(n_local: int, batch_size: int, balanced: bool = False) -> Iterator[slice]:
    """Consecutive slices covering 0..n_local-1 once, none larger than ``batch_size``.
    ``balanced``: as few batches, of sizes that differ by at most one (one or two shapes,
    where the plain cut leaves a ragged last batch: MNIST's splits in batches of 2048 become
    batches of exactly 2000)."""
    if not balanced:
        for start in range(0, n_local, batch_size):
            yield slice(start, min(start + batch_size, n_local))
        return
    count = -(-n_local // batch_size)
    for part in range(count):
        shard = shard_range(n_local, part, count)
        yield slice(shard.start, shard.stop)


def check_shardable(splits: MNISTSplits, global_batch: int, world_size: int) -> None:
    """Every rank needs at least one sample of each split and of each training step."""
    for name in ("train", "val", "test"):
        size = len(getattr(splits, name))
        if size < world_size:
            raise UsageError(f"the {name} split has {size} images, fewer than the {world_size} "
                             f"ranks; raise --limit or use fewer ranks")
    if global_batch < world_size:
        raise UsageError(f"global batch {global_batch} is smaller than the {world_size} ranks; "
                         f"raise --batch-size or use --batch-mode per-rank")
