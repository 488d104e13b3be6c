"""The engine: both batch paths feed identical tensors, bf16 and fp32 both learn, and
evaluation counts are exact whatever the sharding."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import REPO
from torch import nn

from mnist_hpc.data import dataset
from mnist_hpc.data.batches import (
    Batch,
    BatchPlan,
    device_batches,
    epoch_batches,
    torchvision_batches,
)
from mnist_hpc.job.layout import DistEnv
from mnist_hpc.step import engine
from mnist_hpc.step.models import build_model


@pytest.fixture(scope="module")
def splits():
    return dataset.load_splits(REPO / "data", limit=1000)


@pytest.mark.parametrize("normalize,channels_last", [(False, False), (True, True)])
@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
def test_device_and_torchvision_paths_give_identical_batches(splits, normalize, channels_last,
                                                             rank, world_size):
    plan = BatchPlan(len(splits.train), 96, rank, world_size, seed=3, normalize=normalize,
                     channels_last=channels_last)
    steps = plan.steps(1)[:4]
    assert not torch.equal(steps[0].local, torch.arange(len(steps[0].local)))  # shuffled
    device = device_batches(splits.train, steps, plan, None)
    vision = torchvision_batches(str(REPO / "data"), splits.train_indices, steps, plan,
                                 torch.device("cpu"))
    compared = 0
    for (x_dev, y_dev, n_dev, k_dev), (x_tv, y_tv, n_tv, k_tv) in itertools.zip_longest(
            device, vision):
        assert torch.equal(x_dev, x_tv)
        assert torch.equal(y_dev, y_tv)
        assert n_dev == n_tv == 96
        assert torch.equal(k_dev, k_tv)  # the same dropout keys
        compared += 1
    assert compared == 4


def _mean_loss(model: nn.Module, split: dataset.Split, precision: engine.Precision) -> float:
    return engine.evaluate(model, split, range(len(split)), DistEnv(), precision, 256).loss


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_training_lowers_the_loss(splits, dtype):
    torch.manual_seed(0)
    model = build_model("cnn").to(memory_format=torch.channels_last)
    precision = engine.Precision(dtype=dtype, channels_last=True, normalize=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    subset = dataset.Split(splits.train.images[:256], splits.train.labels[:256])
    before = _mean_loss(model, subset, precision)
    plan = BatchPlan(len(subset), 32, normalize=True, channels_last=True)
    batches = itertools.chain.from_iterable(  # 4 epochs of 8 steps: a few dozen steps in all
        epoch_batches(subset, plan, epoch) for epoch in range(4))
    result = engine.train_one_epoch(model, batches, optimizer, loss_fn, 1, precision)
    after = _mean_loss(model, subset, precision)
    assert result.steps == 32 and result.samples == 32 * 32 and not result.stopped
    assert before > 2.0  # chance: ln 10 = 2.30
    assert after < 0.5 * before


def test_training_stops_when_asked(splits):
    torch.manual_seed(0)
    model = build_model("cnn")
    precision = engine.Precision()
    plan = BatchPlan(len(splits.train), 100, shuffle=False)
    result = engine.train_one_epoch(
        model, epoch_batches(splits.train, plan, 0),
        torch.optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(reduction="sum"), 1,
        precision, should_stop=lambda step: step == 3)
    assert (result.steps, result.samples, result.stopped) == (3, 300, True)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_two_shards_add_up_to_the_whole_split(splits, dtype):
    torch.manual_seed(1)
    model = build_model("cnn").to(memory_format=torch.channels_last)
    precision = engine.Precision(dtype=dtype, channels_last=True, normalize=True)
    split = dataset.Split(splits.val.images[:999], splits.val.labels[:999])  # odd: shards differ
    whole = engine.evaluate(model, split, range(len(split)), DistEnv(), precision, 128)
    parts = [engine.evaluate(model, split, dataset.shard_range(len(split), rank, 2), DistEnv(),
                             precision, 128) for rank in range(2)]
    assert [p.count for p in parts] == [500, 499]
    assert whole.count == sum(p.count for p in parts) == len(split)
    assert whole.correct == sum(p.correct for p in parts)
    assert whole.correct == int(whole.correct)  # a count, not an estimate
    assert whole.loss_sum == pytest.approx(sum(p.loss_sum for p in parts), rel=1e-6)
    if dtype is None:  # the plain computation, in one batch
        with torch.inference_mode():
            outputs = model.eval()(dataset.to_input(split.images, True, True))
        assert whole.correct == (outputs.argmax(1) == split.labels).sum().item()
        assert whole.loss_sum == pytest.approx(
            nn.functional.cross_entropy(outputs, split.labels, reduction="sum").item(),
            rel=1e-5)


def test_eval_batch_size_does_not_change_the_result(splits):
    torch.manual_seed(2)
    model = build_model("cnn")
    precision = engine.Precision()
    split = dataset.Split(splits.test.images[:500], splits.test.labels[:500])
    results = [engine.evaluate(model, split, range(len(split)), DistEnv(), precision, size)
               for size in (33, 256, 4096)]
    assert len({r.count for r in results}) == 1 and results[0].count == len(split)
    assert len({r.correct for r in results}) == 1
    for r in results[1:]:
        assert r.loss_sum == pytest.approx(results[0].loss_sum, rel=1e-6)


def test_pass_sums_count_exactly_what_the_training_pass_saw(splits):
    """With the weights held still (lr 0) and no dropout, the sums taken while training equal
    an evaluation of the same samples: the same counts, the same plain cross-entropy (the
    training loss's label smoothing left out); ``take`` starts the next sums from zero."""
    torch.manual_seed(0)
    model = build_model("small")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    sums = engine.PassSums(nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1),
                           torch.device("cpu"))
    split, n = splits.train, 300
    parts = [slice(i, min(i + 64, n)) for i in range(0, n, 64)]
    batches = [Batch(dataset.to_input(split.images[p]), split.labels[p], len(split.labels[p]),
                     torch.arange(n)[p]) for p in parts]
    engine.train_one_epoch(model, batches, optimizer, sums, 1, engine.Precision())
    got = sums.take(DistEnv())
    want = engine.evaluate(model, split, range(n), DistEnv(), engine.Precision(), 128)
    assert (got.count, got.correct) == (n, want.correct)
    assert got.loss_sum == pytest.approx(want.loss_sum, rel=1e-6)
    assert sums.sums.tolist() == [0.0, 0.0, 0.0]
