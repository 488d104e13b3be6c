"""MNIST offline: verification by content, the notebook's split, exact shards and batches."""

from __future__ import annotations

import gzip

import pytest
import torch
from conftest import REPO

from mnist_hpc.data import dataset, mnist_files
from mnist_hpc.data.batches import BatchPlan
from mnist_hpc.errors import UsageError

RAW = REPO / "data" / "MNIST" / "raw"


@pytest.fixture(scope="module")
def splits():
    return dataset.load_splits(REPO / "data")


def test_carried_files_verify_and_load(splits):
    assert (len(splits.train), len(splits.val), len(splits.test)) == (48000, 12000, 10000)
    assert splits.train.images.dtype == torch.uint8
    assert splits.train.images.shape[1:] == (28, 28)
    assert splits.train.labels.dtype == torch.int64
    assert set(splits.test.labels.tolist()) == set(range(10))


def test_split_is_the_notebooks_random_split():
    # random_split with fractions draws one randperm of the whole set from the generator
    train, val = dataset.split_indices(60000, 55)
    expected = torch.randperm(60000, generator=torch.Generator().manual_seed(55))
    assert torch.equal(train, expected[:48000]) and torch.equal(val, expected[48000:])


def test_limit_keeps_the_first_images_of_each_split(splits):
    small = dataset.load_splits(REPO / "data", limit=100)
    assert (len(small.train), len(small.val), len(small.test)) == (100, 100, 100)
    assert torch.equal(small.train.images, splits.train.images[:100])
    assert torch.equal(small.test.labels, splits.test.labels[:100])


def test_decompressed_copy_is_made_once_and_verified(data_copy):
    mnist_files.load_raw(data_copy)
    plain = mnist_files.raw_dir(data_copy) / "t10k-labels-idx1-ubyte"
    assert plain.is_file()
    # a corrupt decompressed copy beside a good .gz is replaced, not trusted
    plain.write_bytes(b"garbage")
    mnist_files.load_raw(data_copy)
    assert plain.read_bytes() == gzip.decompress((RAW / "t10k-labels-idx1-ubyte.gz").read_bytes())


def test_missing_file_names_the_file_and_the_fix(data_copy):
    (mnist_files.raw_dir(data_copy) / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UsageError, match=r"train-labels-idx1-ubyte.gz is missing from .*"
                                         r"--data-dir.*--download"):
        mnist_files.load_raw(data_copy)


def test_wrong_magic_number_is_named(data_copy):
    path = mnist_files.raw_dir(data_copy) / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[3] = 0x03
    path.write_bytes(gzip.compress(bytes(content), compresslevel=1))
    with pytest.raises(UsageError, match=r"magic number 2051, expected 2049"):
        mnist_files.load_raw(data_copy)


def test_train_rows_are_split_without_overlap_and_cover_each_global_batch():
    for world in (1, 2, 3):
        per_rank = [BatchPlan(1000, 128, r, world, seed=1).steps(0)
                    for r in range(world)]
        assert len({len(steps) for steps in per_rank}) == 1
        for k in range(len(per_rank[0])):
            parts = [steps[k].local for steps in per_rank]
            joined = torch.cat(parts)
            assert len(set(joined.tolist())) == len(joined) == per_rank[0][k].global_size
        everything = torch.cat([s.local for steps in per_rank for s in steps])
        assert sorted(everything.tolist()) == list(range(1000))


def test_epoch_order_changes_by_epoch_and_is_shared_by_ranks():
    plan = BatchPlan(500, 100, seed=3)
    a0 = plan.order(0)
    assert torch.equal(a0, BatchPlan(500, 100, rank=1, world_size=2, seed=3).order(0))
    assert not torch.equal(a0, plan.order(1))
    assert torch.equal(BatchPlan(500, 100, seed=3, shuffle=False).order(0), torch.arange(500))


def test_tail_smaller_than_world_is_dropped_and_counted():
    plan = BatchPlan(1025, 512, 0, 2, shuffle=False)
    assert [s.global_size for s in plan.steps(0)] == [512, 512]
    assert plan.steps_per_epoch == 2
    assert BatchPlan(48000, 512).steps_per_epoch == 94


@pytest.mark.parametrize("n, world", [(10, 3), (12000, 7), (5, 5), (1, 1)])
def test_eval_shards_cover_the_split_exactly(n, world):
    shards = [dataset.shard_range(n, r, world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_unshardable_world_is_refused(splits):
    small = dataset.load_splits(REPO / "data", limit=1)
    with pytest.raises(UsageError, match=r"fewer than the 2 ranks"):
        dataset.check_shardable(small, 512, 2)
    with pytest.raises(UsageError, match=r"global batch 2 is smaller than the 4 ranks"):
        dataset.check_shardable(splits, 2, 4)


def test_to_input_matches_totensor(splits):
    torchvision = pytest.importorskip("torchvision")
    image = splits.test.images[0]
    expected = torchvision.transforms.ToTensor()(image.numpy())
    assert torch.equal(dataset.to_input(image[None])[0], expected)


@pytest.mark.parametrize("n, batch", [(48000, 2048), (12000, 2048), (10000, 2048), (999, 128),
                                      (7, 3), (5, 8), (0, 4)])
def test_balanced_eval_batches_cover_the_split_once_in_at_most_two_sizes(n, batch):
    plain = list(dataset.eval_batches(n, batch))
    balanced = list(dataset.eval_batches(n, batch, balanced=True))
    covered = [i for part in balanced for i in range(part.start, part.stop)]
    assert covered == list(range(n))
    assert len(balanced) == len(plain)  # no more batches than the plain cut
    sizes = {part.stop - part.start for part in balanced}
    assert max(sizes, default=0) <= batch and (not sizes or max(sizes) - min(sizes) <= 1)
    if n in (48000, 12000, 10000):
        assert sizes == {2000}  # MNIST's splits: one evaluation shape on the GPU
