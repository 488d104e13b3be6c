"""The engine: both batch paths feed identical tensors, bf16 and fp32 both learn, and
evaluation counts are exact whatever the sharding."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mnist_hpc import data, engine
from mnist_hpc.launcher import DistEnv
from mnist_hpc.models import build_model

from conftest import REPO


@pytest.fixture(scope="module")
def splits():
    return data.load_splits(REPO / "data", limit=1000)


@pytest.mark.parametrize("normalize,channels_last", [(False, False), (True, True)])
@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2)])
def test_device_and_torchvision_paths_give_identical_batches(splits, normalize, channels_last,
                                                             rank, world_size):
    precision = engine.Precision(channels_last=channels_last, normalize=normalize)
    steps = data.train_steps(len(splits.train), 96, rank, world_size, seed=3, epoch=1,
                             shuffle=True)[:4]
    assert not torch.equal(steps[0].local, torch.arange(len(steps[0].local)))  # shuffled
    device = engine.device_batches(splits.train, [(s.local, s.global_size) for s in steps],
                                   precision)
    loader = data.torchvision_loader(REPO / "data", splits.train_indices, True,
                                     [s.local for s in steps])
    vision = engine.loader_batches(loader, [s.global_size for s in steps], torch.device("cpu"),
                                   precision)
    compared = 0
    for (x_dev, y_dev, n_dev), (x_tv, y_tv, n_tv) in itertools.zip_longest(device, vision):
        assert torch.equal(x_dev, x_tv)
        assert torch.equal(y_dev, y_tv)
        assert n_dev == n_tv == 96
        compared += 1
    assert compared == 4


def _mean_loss(model: nn.Module, split: data.Split, precision: engine.Precision) -> float:
    return engine.evaluate(model, split, range(len(split)), DistEnv(), precision, 256).loss


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_training_lowers_the_loss(splits, dtype):
    torch.manual_seed(0)
    model = build_model("cnn").to(memory_format=torch.channels_last)
    precision = engine.Precision(dtype=dtype, channels_last=True, normalize=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    subset = data.Split(splits.train.images[:256], splits.train.labels[:256])
    before = _mean_loss(model, subset, precision)
    positions = []
    for epoch in range(4):  # 4 epochs of 8 steps: a few dozen steps in all
        positions += [(s.local, s.global_size)
                      for s in data.train_steps(len(subset), 32, 0, 1, 0, epoch, True)]
    result = engine.train_one_epoch(model, engine.device_batches(subset, positions, precision),
                                    optimizer, loss_fn, 1, precision)
    after = _mean_loss(model, subset, precision)
    assert result.steps == 32 and result.samples == 32 * 32 and not result.stopped
    assert before > 2.0  # chance: ln 10 = 2.30
    assert after < 0.5 * before


def test_training_stops_when_asked(splits):
    torch.manual_seed(0)
    model = build_model("cnn")
    precision = engine.Precision()
    steps = data.train_steps(len(splits.train), 100, 0, 1, 0, 0, False)
    result = engine.train_one_epoch(
        model, engine.device_batches(splits.train, [(s.local, s.global_size) for s in steps],
                                     precision),
        torch.optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(reduction="sum"), 1,
        precision, should_stop=lambda step: step == 3)
    assert (result.steps, result.samples, result.stopped) == (3, 300, True)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_two_shards_add_up_to_the_whole_split(splits, dtype):
    torch.manual_seed(1)
    model = build_model("cnn").to(memory_format=torch.channels_last)
    precision = engine.Precision(dtype=dtype, channels_last=True, normalize=True)
    split = data.Split(splits.val.images[:999], splits.val.labels[:999])  # odd: shards differ
    whole = engine.evaluate(model, split, range(len(split)), DistEnv(), precision, 128)
    parts = [engine.evaluate(model, split, data.shard_range(len(split), rank, 2), DistEnv(),
                             precision, 128) for rank in range(2)]
    assert [p.count for p in parts] == [500, 499]
    assert whole.count == sum(p.count for p in parts) == len(split)
    assert whole.correct == sum(p.correct for p in parts)
    assert whole.correct == int(whole.correct)  # a count, not an estimate
    assert whole.loss_sum == pytest.approx(sum(p.loss_sum for p in parts), rel=1e-6)
    if dtype is None:  # the plain computation, in one batch
        with torch.inference_mode():
            outputs = model.eval()(data.to_input(split.images, True, True))
        assert whole.correct == (outputs.argmax(1) == split.labels).sum().item()
        assert whole.loss_sum == pytest.approx(
            nn.functional.cross_entropy(outputs, split.labels, reduction="sum").item(),
            rel=1e-5)


def test_eval_batch_size_does_not_change_the_result(splits):
    torch.manual_seed(2)
    model = build_model("cnn")
    precision = engine.Precision()
    split = data.Split(splits.test.images[:500], splits.test.labels[:500])
    results = [engine.evaluate(model, split, range(len(split)), DistEnv(), precision, size)
               for size in (33, 256, 4096)]
    assert len({r.count for r in results}) == 1 and results[0].count == len(split)
    assert len({r.correct for r in results}) == 1
    for r in results[1:]:
        assert r.loss_sum == pytest.approx(results[0].loss_sum, rel=1e-6)
