"""MNIST offline: find, verify, decompress, load as tensors; split; shard; batch.

Each split is one uint8 tensor (N, 28, 28) plus int64 labels. A batch is an index slice turned
into float in [0, 1] (``/255``, as torchvision's ToTensor does) on the training device. This
module knows of ranks only through the (rank, world_size) it is given.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .errors import UsageError
from .files import atomic_write
from .watchdog import interruptible

# name -> (md5 of the uncompressed file, idx magic number, item count). Content is checked by
# the uncompressed md5: one .gz here was re-compressed, so its own md5 differs from torchvision's.
FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 2051, 60000),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 2049, 60000),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 2051, 10000),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 2049, 10000),
}
MEAN, STD = 0.1307, 0.3081  # MNIST training-set pixel statistics, for --normalize
# seconds one network operation of --download (connect, a proxy's answer, one read) may
# wait: a proxy or mirror that never answers would otherwise hold the job until walltime.
# torchvision tries two mirrors per file and gives up at the first file that fails.
DOWNLOAD_TIMEOUT_S = 20.0
_PLACE = ("copy the four MNIST .gz files into {raw} (this repo carries them in "
          "data/MNIST/raw/) or point --data-dir at a directory holding MNIST/raw/")
_FIX = _PLACE + ", or pass --download"


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


def raw_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def _check_header(name: str, data: bytes, where: Path) -> None:
    """Magic number and counts, so a wrong file gets a message more precise than an md5."""
    _, magic, count = FILES[name]
    if len(data) < 8:
        raise UsageError(f"MNIST file {where} is truncated ({len(data)} bytes); "
                         f"replace it with a good copy")
    found_magic = int.from_bytes(data[0:4], "big")
    found_count = int.from_bytes(data[4:8], "big")
    if found_magic != magic:
        raise UsageError(f"MNIST file {where} has magic number {found_magic}, expected {magic}: "
                         f"it is not the idx file {name}; replace it with a good copy")
    if found_count != count:
        raise UsageError(f"MNIST file {where} holds {found_count} items, expected {count}; "
                         f"replace it with a good copy")


def _verified(name: str, data: bytes, where: Path) -> bytes:
    _check_header(name, data, where)
    digest = hashlib.md5(data).hexdigest()
    if digest != FILES[name][0]:
        raise UsageError(f"MNIST file {where} is corrupt or truncated (md5 {digest}, expected "
                         f"{FILES[name][0]}); replace it with a good copy")
    return data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read MNIST file {path}: {exc.strerror}; "
                         f"check its permissions (chmod a+r)")


def _write_cache(path: Path, data: bytes) -> None:
    """Keep the decompressed copy for next time, atomically; skip if the folder is read-only."""
    try:
        atomic_write(path, data)
    except OSError:
        pass


def read_file(data_dir: str | Path, name: str) -> Optional[bytes]:
    """Verified content of one MNIST file, or None if neither it nor its .gz exists."""
    folder = raw_dir(data_dir)
    plain, packed = folder / name, folder / f"{name}.gz"
    if plain.is_file() and (os.access(plain, os.R_OK) or not packed.is_file()):
        data = _read(plain)  # a cache we cannot read (another user's) falls back to the .gz
        if hashlib.md5(data).hexdigest() == FILES[name][0]:
            return data
        if not packed.is_file():
            return _verified(name, data, plain)  # raises with the precise reason
    if not packed.is_file():
        return None
    try:
        data = gzip.decompress(_read(packed))
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"MNIST file {packed} is corrupt or truncated ({exc}); "
                         f"replace it with a good copy")
    _verified(name, data, packed)
    _write_cache(plain, data)
    return data


def _download(data_dir: Path) -> None:
    """torchvision's MNIST download, every network wait bounded by DOWNLOAD_TIMEOUT_S;
    SIGTERM and SIGINT end the process meanwhile (nothing has been trained yet)."""
    import torchvision  # only here: the default path never needs torchvision

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        with interruptible():
            for train in (True, False):
                torchvision.datasets.MNIST(root=str(data_dir), train=train, download=True)
    except Exception as exc:  # any network or disk failure becomes the same one-line advice
        first_line = (str(exc).strip().splitlines() or [""])[0].rstrip(":")
        raise UsageError(f"downloading MNIST into {raw_dir(data_dir)} failed "
                         f"({type(exc).__name__}: {first_line}); "
                         + _PLACE.format(raw=raw_dir(data_dir)))
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _parse(name: str, data: bytes) -> torch.Tensor:
    offset = 16 if FILES[name][1] == 2051 else 8
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if offset == 16:
        array = array.reshape(-1, 28, 28)
    return torch.from_numpy(array.copy())


def load_raw(data_dir: str | Path, download: bool = False) -> dict[str, torch.Tensor]:
    """All four files as tensors, verified. Missing files: download if asked, else UsageError."""
    folder = raw_dir(data_dir)
    if not Path(data_dir).is_dir():
        raise UsageError(f"data directory {data_dir} does not exist; " + _FIX.format(raw=folder))
    contents = {name: read_file(data_dir, name) for name in FILES}
    missing = [name for name, data in contents.items() if data is None]
    if missing and download:
        _download(Path(data_dir))
        contents = {name: read_file(data_dir, name) for name in FILES}
        missing = [name for name, data in contents.items() if data is None]
    if missing:
        raise UsageError(f"MNIST file {missing[0]}.gz is missing from {folder}; "
                         + _FIX.format(raw=folder))
    tensors = {name: _parse(name, data) for name, data in contents.items()}
    return {name: (t.long() if "labels" in name else t) for name, t in tensors.items()}


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
    test_n = len(raw["t10k-labels-idx1-ubyte"]) if limit is None else limit
    return MNISTSplits(
        train=Split(images[train_idx], labels[train_idx]),
        val=Split(images[val_idx], labels[val_idx]),
        test=Split(raw["t10k-images-idx3-ubyte"][:test_n], raw["t10k-labels-idx1-ubyte"][:test_n]),
        train_indices=train_idx,
        val_indices=val_idx,
    )


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


def derived_seed(seed: int, stream: int) -> int:
    """Independent seeds from the run's one ``--seed``: ``stream`` is the epoch for the
    shuffle order and rank + 1 for dropout (every rank's dropout differs)."""
    return seed * 1_000_003 + stream


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The global order of one epoch, the same on every rank (set_epoch semantics)."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return torch.randperm(n, generator=generator)


@dataclass(frozen=True)
class Step:
    """One optimizer step: this rank's positions in the split and the global batch size."""

    local: torch.Tensor
    global_size: int


def train_steps(n: int, global_batch: int, rank: int, world_size: int, seed: int, epoch: int,
                shuffle: bool) -> list[Step]:
    """Each global batch of the epoch's order, cut into ``world_size`` near-equal slices.

    Every rank's step k covers a disjoint part of global batch k, so the averaged gradient of
    W ranks equals the gradient of one process on the whole batch (the engine scales each
    rank's loss sum by W / global size). A final global batch with fewer samples than ranks is
    dropped (at most world_size - 1 samples): every rank must step together.
    """
    order = epoch_order(n, seed, epoch, shuffle)
    steps = []
    for start in range(0, n, global_batch):
        batch = order[start:start + global_batch]
        if len(batch) < world_size:
            break
        steps.append(Step(torch.tensor_split(batch, world_size)[rank], len(batch)))
    return steps


def steps_per_epoch(n: int, global_batch: int, world_size: int) -> int:
    full, tail = divmod(n, global_batch)
    return full + (1 if tail >= world_size else 0)


def eval_batches(n_local: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n_local, batch_size):
        yield slice(start, min(start + batch_size, n_local))


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


def torchvision_loader(data_dir: str | Path, indices: torch.Tensor, train: bool,
                       batch_positions: list[torch.Tensor]) -> torch.utils.data.DataLoader:
    """The notebook's path: torchvision dataset + ToTensor through a DataLoader, fed the same
    positions as the device path, so both give identical batches. No workers: no fork under MPI."""
    import torchvision

    folder = raw_dir(data_dir)
    if not all((folder / name).is_file() for name in FILES):
        raise UsageError(f"--loader torchvision needs the decompressed files in {folder}, and "
                         f"the folder is not writable; use the default --loader device")
    dataset = torchvision.datasets.MNIST(root=str(data_dir), train=train, download=False,
                                         transform=torchvision.transforms.ToTensor())
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    return torch.utils.data.DataLoader(subset, batch_sampler=[p.tolist() for p in batch_positions],
                                       num_workers=0)
