"""Augmentation: a sample's transform depends on (seed, epoch, index) only, so 1 rank and 2
give the same images; shapes, dtype and range are kept; and it is off by default."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc.config.flags import parse_args
from mnist_hpc.config.options import RunConfig, make_config
from mnist_hpc.data import augment, dataset
from mnist_hpc.data.batches import BatchPlan, Step, device_batches, epoch_batches
from mnist_hpc.errors import UsageError

N, BATCH, SEED, EPOCH, SPLIT_SEED = 300, 64, 3, 1, 55
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def split() -> dataset.Split:
    return dataset.load_splits(RunConfig().data_dir, limit=N).train


def images_by_sample(split, mode: str, world_size: int) -> dict[int, torch.Tensor]:
    """Every rank's training inputs of one epoch, keyed by position in the split."""
    found = {}
    for rank in range(world_size):
        plan = BatchPlan(len(split), BATCH, rank, world_size, SEED, augment=mode)
        for step, (inputs, *_) in zip(plan.steps(EPOCH), epoch_batches(split, plan, EPOCH)):
            found.update(zip(step.local.tolist(), inputs))
    return found


@pytest.mark.parametrize("mode", ["shift", "affine"])
def test_a_sample_gets_the_same_transform_at_one_rank_and_two(split, mode):
    one, two = images_by_sample(split, mode, 1), images_by_sample(split, mode, 2)
    assert sorted(one) == sorted(two) == list(range(N))
    for index in range(N):
        assert torch.equal(one[index], two[index]), index
    plain = images_by_sample(split, "none", 1)
    changed = sum(not torch.equal(one[i], plain[i]) for i in range(N))
    assert changed > N // 2, "most images must actually move"


@pytest.mark.parametrize("mode", ["shift", "affine"])
def test_transforms_are_seeded_by_seed_and_epoch(split, mode):
    def theta(seed, epoch):
        return augment.for_epoch(mode, seed, SPLIT_SEED, epoch, N, CPU).theta

    assert torch.equal(theta(SEED, EPOCH), theta(SEED, EPOCH))
    assert not torch.equal(theta(SEED, EPOCH), theta(SEED, EPOCH + 1))
    assert not torch.equal(theta(SEED, EPOCH), theta(SEED + 1, EPOCH))


@pytest.mark.parametrize("mode", ["shift", "affine"])
def test_shape_dtype_and_range_are_kept(split, mode):
    transforms = augment.for_epoch(mode, SEED, SPLIT_SEED, EPOCH, N, CPU)
    index = torch.arange(N)
    out = transforms.apply(split.images, index)
    assert out.dtype == torch.uint8 and out.shape == split.images.shape
    assert out.float().sum() > 0.8 * split.images.float().sum()  # digits moved, not erased
    [(inputs, labels, size, _)] = device_batches(
        split, [Step(index, N)], BatchPlan(N, N, channels_last=True), transforms)
    assert inputs.shape == (N, 1, 28, 28) and inputs.dtype == torch.float32
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0
    assert torch.equal(labels, split.labels) and size == N


def test_a_shift_is_a_whole_pixel_translation(split):
    """The shifted image is the original moved by its (dx, dy) pixel for pixel, with
    background (0) moved in at the edges."""
    transforms = augment.for_epoch("shift", SEED, SPLIT_SEED, EPOCH, N, CPU)
    out = transforms.apply(split.images, torch.arange(N))
    pixels = transforms.theta[:, :, 2] * (-augment.SIZE / 2)
    shifts = pixels.round().long()
    torch.testing.assert_close(pixels, shifts.float(), rtol=0, atol=1e-5)  # whole pixels
    assert shifts.abs().max() == augment.MAX_SHIFT
    pad = augment.MAX_SHIFT
    padded = torch.nn.functional.pad(split.images, (pad, pad, pad, pad))
    for i in range(N):
        dx, dy = shifts[i].tolist()
        moved = padded[i, pad - dy:pad - dy + 28, pad - dx:pad - dx + 28]
        assert torch.equal(out[i], moved), (i, dx, dy)


def test_off_by_default_and_the_batches_unchanged(split):
    assert RunConfig().augment == "none"
    assert parse_args([]).augment == "none"
    assert augment.for_epoch("none", SEED, SPLIT_SEED, EPOCH, N, CPU) is None
    index = torch.arange(BATCH)
    plan = BatchPlan(N, BATCH, normalize=True, channels_last=True)
    [(inputs, *_)] = device_batches(split, [Step(index, BATCH)], plan, None)
    assert torch.equal(inputs, dataset.to_input(split.images[index], True, True))


def test_the_flag_sets_it_and_the_torchvision_loader_refuses_it():
    assert parse_args(["--augment", "affine"]).augment == "affine"
    with pytest.raises(UsageError, match="augment must be one of none, shift, affine"):
        parse_args(["--augment", "flip"])
    with pytest.raises(UsageError, match="augment works on the device path only"):
        make_config({"augment": "shift", "loader": "torchvision"})


