"""The warm-up leaves no trace: training inside ``preserved`` and then for real gives exactly
the run without it, and its steps cover each batch shape of an epoch once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_hpc.config.options import RunConfig
from mnist_hpc.data import dataset
from mnist_hpc.data.batches import BatchPlan, epoch_batches, shapes_of
from mnist_hpc.job.layout import DistEnv
from mnist_hpc.step import engine, recipe, warmup


def _train(config: RunConfig, split: dataset.Split, warm: bool) -> tuple[list, dict]:
    """Two epochs of ``config`` on ``split``; with ``warm``, first two epochs inside
    ``preserved`` (with its own dropout draws and optimizer steps) that must leave no trace."""
    plan = BatchPlan(len(split), config.batch_size, seed=config.seed,
                     channels_last=config.channels_last)
    run = recipe.build(config, torch.device("cpu"), plan.steps_per_epoch)
    losses = []
    for epoch in range(2):
        batches = list(epoch_batches(split, plan, epoch))
        if warm and epoch == 0:
            with warmup.preserved(run.model, run.optimizer, torch.device("cpu")):
                for _ in range(2):
                    engine.train_one_epoch(run.model, batches, run.optimizer, run.loss_fn, 1,
                                           run.precision)
        engine.train_one_epoch(run.model, batches, run.optimizer, run.loss_fn, 1, run.precision,
                               run.scheduler)
        losses.append(engine.evaluate(run.model, split, range(len(split)), DistEnv(),
                                      run.precision, 64).loss_sum)
    return losses, run.model.state_dict()


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_inside_preserved_leaves_no_trace(optimizer):
    generator = torch.Generator().manual_seed(3)
    split = dataset.Split(torch.randint(0, 256, (100, 28, 28), dtype=torch.uint8,
                                     generator=generator),
                       torch.randint(0, 10, (100,), generator=generator))
    config = RunConfig(optimizer=optimizer, batch_size=32, schedule="onecycle", epochs=2,
                       lr=0.01)
    plain_losses, plain_weights = _train(config, split, warm=False)
    warm_losses, warm_weights = _train(config, split, warm=True)
    assert warm_losses == plain_losses  # bit for bit: dropout, moments and steps as without
    for name, tensor in plain_weights.items():
        assert torch.equal(warm_weights[name], tensor), name


def test_preserved_restores_even_when_the_warm_up_fails():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with warmup.preserved(model, optimizer, torch.device("cpu")):
            model(torch.ones(1, 2)).sum().backward()
            optimizer.step()
            raise RuntimeError("boom")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("n, batch, world", [(1000, 256, 1), (1000, 250, 1), (1001, 500, 2),
                                             (999, 128, 4)])
def test_warm_up_steps_are_one_per_global_batch_size_on_every_rank(n, batch, world):
    every = [shapes_of(BatchPlan(n, batch, rank, world).steps(0)) for rank in range(world)]
    sizes = [[step.global_size for step in steps] for steps in every]
    assert all(s == sizes[0] for s in sizes)  # the same count on every rank: DDP pairs them up
    tail = n % batch
    assert sizes[0] == [batch] + ([tail] if tail >= world else [])
