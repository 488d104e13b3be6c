"""The notebook's loop (bench.notebook) against the package's run (bench.package): the same
images in the same order, and the seed recipe's two sides start from the same weights and
the same dropout seed."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from mnist_hpc.bench import notebook, package
from mnist_hpc.bench.settings import Settings
from mnist_hpc.data import dataset
from mnist_hpc.data.batches import BatchPlan
from mnist_hpc.job.layout import DistEnv
from mnist_hpc.step import engine, recipe

CPU = torch.device("cpu")
LIMIT = 300


def _settings() -> Settings:
    return Settings(CPU, str(REPO / "data"), repeats=1, samples=256, warmup=0, limit=LIMIT,
                    epochs=1, evals_per_epoch=1, targets=(98.0,))


def test_seed_preset_starts_where_the_notebook_does():
    model, _, _ = notebook.network(CPU)
    config = package.preset("seed", _settings())
    built = recipe.build(config, CPU, BatchPlan(LIMIT, config.batch_size).steps_per_epoch)
    weights = built.raw_model.state_dict()
    assert list(weights) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights[name], tensor), name


def test_notebook_evaluate_sees_the_package_split():
    """Its DataLoader over ToTensor'd torchvision images scores the model exactly as the
    package's evaluation of the same split does (batches that divide the split: the notebook's
    mean of batch means is then the package's mean over samples)."""
    model, _, loss_fn = notebook.network(CPU)
    _, validation_data = notebook.datasets(str(REPO / "data"), LIMIT)
    loader = torch.utils.data.DataLoader(validation_data, batch_size=100)
    accuracy, loss = notebook.evaluate(loader, model, loss_fn, CPU)
    val = dataset.load_splits(REPO / "data", limit=LIMIT).val
    found = engine.evaluate(model, val, range(len(val)), DistEnv(device="cpu"),
                            engine.Precision(), batch_size=100)
    assert found.count == LIMIT
    assert accuracy == found.accuracy
    assert loss == pytest.approx(found.loss, rel=1e-5)
