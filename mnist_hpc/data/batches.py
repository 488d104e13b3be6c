"""An epoch's training batches, built in one place for the trainer, the warm-up and every
bench case: the epoch's order, this rank's slice of each global batch, the augmentation and
the cast to the training device's input.

Every rank's step k covers a disjoint part of global batch k, so the averaged gradient of W
ranks equals the gradient of one process on the whole batch (the engine scales each rank's
loss sum by W / global size). A final global batch with fewer samples than ranks is dropped
(at most world_size - 1 samples): every rank must step together.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Optional

import torch

from .. import seeds
from ..errors import UsageError
from . import augment
from .dataset import MEAN, STD, Split, to_input
from .mnist_files import FILES, raw_dir

class Batch(NamedTuple):
    """One step's share of this rank, as engine.train_one_epoch takes it."""

    inputs: torch.Tensor
    labels: torch.Tensor
    global_size: int  # samples in the step over all ranks
    keys: torch.Tensor  # each sample's dropout key (seeds.sample_keys)


@dataclass(frozen=True)
class Step:
    """One optimizer step: this rank's positions in the split, the global batch size and the
    epoch (the samples' dropout keys depend on it)."""

    local: torch.Tensor
    global_size: int
    epoch: int = 0


@dataclass(frozen=True)
class BatchPlan:
    """How every epoch of a run is cut into batches; only ``rank`` differs between ranks."""

    n: int  # images in the training split
    global_batch: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    split_seed: int = 55
    shuffle: bool = True
    augment: str = "none"
    normalize: bool = False  # the input's scaling and layout (step.engine.Precision's)
    channels_last: bool = False

    def order(self, epoch: int) -> torch.Tensor:
        """The global order of one epoch, the same on every rank (set_epoch semantics)."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=seeds.generator(
            "shuffle", self.seed, self.split_seed, epoch))

    def steps(self, epoch: int) -> list[Step]:
        """Each global batch of the epoch's order, cut into ``world_size`` near-equal slices."""
        order = self.order(epoch)
        steps = []
        for start in range(0, self.n, self.global_batch):
            batch = order[start:start + self.global_batch]
            if len(batch) < self.world_size:
                break
            steps.append(Step(torch.tensor_split(batch, self.world_size)[self.rank], len(batch),
                              epoch))
        return steps

    def sample_keys(self, step: Step, index: torch.Tensor) -> torch.Tensor:
        """The dropout keys of the samples at positions ``index`` (on the device) of a step."""
        return seeds.sample_keys(self.seed, self.split_seed, step.epoch, index)

    @property
    def steps_per_epoch(self) -> int:
        full, tail = divmod(self.n, self.global_batch)
        return full + (1 if tail >= self.world_size else 0)


def shapes_of(steps: list[Step]) -> list[Step]:
    """One step for each distinct global batch size (the full batch and a ragged last one):
    the same number on every rank, so DDP's collectives pair up."""
    first: dict[int, Step] = {}
    for step in steps:
        first.setdefault(step.global_size, step)
    return list(first.values())


def epoch_batches(split: Split, plan: BatchPlan, epoch: int, first: int = 0,
                  shapes_only: bool = False,
                  torchvision_from: Optional[tuple[str, torch.Tensor]] = None
                  ) -> Iterator[Batch]:
    """This rank's batches of ``epoch`` from step ``first`` (a resumed epoch), augmented and
    cast on the split's device. ``shapes_only``: one batch per distinct shape (the warm-up).
    ``torchvision_from`` (data directory, the split's positions in the 60k file): the same
    batches through the notebook's DataLoader (``--loader torchvision``)."""
    steps = plan.steps(epoch)[first:]
    if shapes_only:
        steps = shapes_of(steps)
    if torchvision_from is not None:
        return torchvision_batches(*torchvision_from, steps, plan, split.images.device)
    transforms = augment.for_epoch(plan.augment, plan.seed, plan.split_seed, epoch, plan.n,
                                   split.images.device)
    return device_batches(split, steps, plan, transforms)


def repeated_batches(split: Split, plan: BatchPlan) -> Iterator[Batch]:
    """Epoch 0's full batches, over and over (the benches: one shape, the same work each)."""
    steps = [s for s in plan.steps(0) if s.global_size == plan.global_batch]
    if not steps:
        raise UsageError(f"the training split ({plan.n} images) is smaller than one batch of "
                         f"{plan.global_batch}; raise --limit")
    return device_batches(split, itertools.cycle(steps), plan, None)


def device_batches(split: Split, steps: Iterable[Step], plan: BatchPlan,
                    transforms: Optional[augment.EpochTransforms]) -> Iterator[Batch]:
    """Batches from a split resident on the device: an index slice, cast on the device.

    A finite epoch's indices go to the device in one copy: a copy from pageable host memory
    per step would wait for the GPU to drain before each step, and the host could never run
    ahead."""
    device = split.images.device
    if isinstance(steps, list):
        if not steps:
            return
        lengths = [len(s.local) for s in steps]
        indices = torch.split(torch.cat([s.local for s in steps]).to(device), lengths)
        pairs: Iterable = zip(indices, steps)
    else:  # endless: each step's indices on their own (small, and copied once per step)
        pairs = ((s.local.to(device), s) for s in steps)
    for index, step in pairs:
        images = split.images[index]
        if transforms is not None:
            images = transforms.apply(images, index)
        yield Batch(to_input(images, plan.normalize, plan.channels_last), split.labels[index],
                    step.global_size, plan.sample_keys(step, index))


def torchvision_batches(data_dir: str | Path, indices: torch.Tensor, steps: list[Step],
                        plan: BatchPlan, device: torch.device) -> Iterator[Batch]:
    """The notebook's path: torchvision dataset + ToTensor through a DataLoader, fed the same
    positions as the device path, so both give identical batches. No workers: no fork under
    MPI."""
    import torchvision

    folder = raw_dir(data_dir)
    if not all((folder / name).is_file() for name in FILES):
        raise UsageError(f"--loader torchvision needs the decompressed files in {folder}, and "
                         f"the folder is not writable; use the default --loader device")
    dataset = torchvision.datasets.MNIST(root=str(data_dir), train=True, download=False,
                                         transform=torchvision.transforms.ToTensor())
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    loader = torch.utils.data.DataLoader(subset, num_workers=0,
                                         batch_sampler=[s.local.tolist() for s in steps])
    for (inputs, labels), step in zip(loader, steps):
        inputs = inputs.to(device)
        if plan.normalize:
            inputs = (inputs - MEAN) / STD
        if plan.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        yield Batch(inputs, labels.to(device), step.global_size,
                    plan.sample_keys(step, step.local.to(device)))
