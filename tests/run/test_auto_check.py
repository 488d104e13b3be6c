"""``--cuda-graphs auto`` verifies before it trusts (step.verify), shown on CPU.

On one GPU, auto picks the CUDA-graphed step and bf16. Here the trainer is told it is on such
a GPU (``graphs.wanted`` answers yes) and a stand-in takes the graphed step's place: one that
replays the eager step faithfully, one that fails as a capture can, and one that diverges.
The check must trust the first; the run must fall back to the plain eager fp32 step for the
others (one line, recorded in metrics.json, the history of a plain run exactly).
``--cuda-graphs on`` is not checked (it fails loudly, as asked): on CPU the config refuses it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import read_metrics

from mnist_hpc import train
from mnist_hpc.config import flags
from mnist_hpc.config.options import RunConfig
from mnist_hpc.data import dataset
from mnist_hpc.data.batches import BatchPlan, epoch_batches
from mnist_hpc.step import engine, graphs, recipe, verify

CPU = torch.device("cpu")


class Faithful:
    """What a correct capture replays: the eager step, in the chosen precision."""

    def __init__(self, model, optimizer, loss_fn, world_size, precision, device):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.world_size, self.precision = world_size, precision

    def __call__(self, batch) -> None:
        engine.train_one_epoch(self.model, [batch], self.optimizer, self.loss_fn,
                               self.world_size, self.precision)


class Failing(Faithful):
    def __call__(self, batch) -> None:
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing "
                           "(injected)")


class Diverging(Faithful):
    """Steps, then moves every weight at random: as a replay of the wrong memory would."""

    def __call__(self, batch) -> None:
        super().__call__(batch)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.01)


ARGS = ["--limit", "256", "--batch-size", "64", "--epochs", "1", "--device", "cpu",
        "--no-plots"]


def run(tmp_path, capsys, monkeypatch, stand_in, *extra: str, run_id: str = "run"):
    monkeypatch.setattr(graphs, "wanted", lambda config, env, device: True)
    monkeypatch.setattr(graphs, "GraphedStep", stand_in)
    code = train.main([*ARGS, *extra, "--results-dir", str(tmp_path), "--run-id", run_id])
    out, err = capsys.readouterr()
    return code, out, err, tmp_path / run_id


@pytest.fixture(scope="module")
def plain_history(tmp_path_factory) -> np.ndarray:
    results = tmp_path_factory.mktemp("plain")
    assert train.main([*ARGS, "--cuda-graphs", "off", "--precision", "fp32", "--results-dir",
                       str(results), "--run-id", "plain"]) == 0
    return np.load(results / "plain" / "history.npy")


@pytest.mark.parametrize("stand_in, why", [
    (Failing, r"its first step failed \(RuntimeError: CUDA error: operation not permitted "
              r"when stream is capturing \(injected\)\)"),
    (Diverging, r"its first step differs from the plain fp32 step's \(update cosine 0\.\d+, "
                r"needs >= 0\.8; length ratio \d+\.\d+, needs within 1\.25x\)"),
], ids=["failing", "diverging"])
def test_auto_falls_back_to_the_plain_step_says_why_and_records_it(
        tmp_path, capsys, monkeypatch, plain_history, stand_in, why):
    code, out, err, run_dir = run(tmp_path, capsys, monkeypatch, stand_in)
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("--cuda-graphs auto")]
    assert re.fullmatch(rf"--cuda-graphs auto: CUDA graphs, bf16 not trusted, {why}; "
                        rf"training with the plain eager fp32 step", line), line
    metrics = read_metrics(run_dir)
    check = metrics["auto_check"]
    assert check["path"] == "CUDA graphs, bf16" and check["trusted"] is False
    assert re.fullmatch(why, check["why"])
    assert metrics["batch"]["cuda_graphs"] is False and metrics["batch"]["precision"] == "fp32"
    assert (metrics["config"]["cuda_graphs"], metrics["config"]["precision"]) == ("off", "fp32")
    # the run is the plain run: the check left no trace in it
    assert np.array_equal(np.load(run_dir / "history.npy"), plain_history)


def test_a_step_that_matches_is_trusted(monkeypatch):
    """The trusted side of the same check, through ``verify.check_graphs`` as the trainer
    calls it (a trainer on CPU cannot go on to record a graphed step: the config refuses
    --cuda-graphs on without CUDA)."""
    monkeypatch.setattr(graphs, "GraphedStep", Faithful)
    built = recipe.build(flags.parse_args(ARGS), CPU, 4, graphs=True)  # bf16, as on a GPU
    split = dataset.load_splits(RunConfig().data_dir, limit=256).train
    first = next(iter(epoch_batches(split, BatchPlan(len(split), 64, seed=0), 0)))
    check = verify.check_graphs(built.model, built, first, 1, CPU)
    assert check["path"] == "CUDA graphs, bf16"
    assert check["trusted"] is True and check["why"] is None
    assert check["update_cosine"] > 0.95 and abs(check["update_length_ratio"] - 1) < 0.01
