"""End to end on one process: every file of the run directory, from any working directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import only_run_dir, read_metrics, run_trainer


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One short real run with --limit, started from an unrelated working directory."""
    elsewhere = tmp_path_factory.mktemp("cwd")
    results_dir = tmp_path_factory.mktemp("results")
    result = run_trainer(["--limit", "600", "--epochs", "2", "--results-dir", str(results_dir)],
                         cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, only_run_dir(results_dir)


def test_prints_the_notebooks_epoch_lines_and_the_run_directory(smoke_run):
    result, run_dir = smoke_run
    lines = result.stdout.splitlines()
    assert sum(line.startswith("Epoch 0: val. loss: ") for line in lines) == 1
    assert "val. accuracy: " in next(l for l in lines if l.startswith("Epoch 1:"))
    assert f"Run directory: {run_dir}" in lines
    assert "\r" not in result.stdout  # no progress bar when stdout is not a terminal


def test_run_directory_holds_every_file(smoke_run):
    _, run_dir = smoke_run
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "history.npy", "history.csv", "metrics.json", "loss.png",
            "accuracy.png", "checkpoint.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for plot in ("loss.png", "accuracy.png"):
        assert (run_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["limit"] == 600 and config["epochs"] == 2 and config["model"] == "cnn"


def test_history_has_the_notebooks_shape_and_ranges(smoke_run):
    _, run_dir = smoke_run
    history = np.load(run_dir / "history.npy")
    assert history.dtype == np.float64 and history.shape == (2, 4)
    assert ((history[:, [0, 2]] >= 0) & (history[:, [0, 2]] <= 100)).all()
    assert (history[:, [1, 3]] > 0).all()
    csv = np.loadtxt(run_dir / "history.csv", delimiter=",", skiprows=1)
    assert np.allclose(csv[:, 1:], history)


def test_metrics_json_records_the_run(smoke_run):
    _, run_dir = smoke_run
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["run_id"] == run_dir.name
    assert metrics["samples"] == {"train": 600, "val": 600, "test": 600}
    assert metrics["world"]["world_size"] == 1 and metrics["world"]["launcher"] == "single"
    assert metrics["model"] == {"name": "cnn", "parameters": 1_199_882}
    assert len(metrics["epochs"]) == 2
    for epoch in metrics["epochs"]:
        assert epoch["train_s"] > 0 and epoch["eval_s"] > 0 and epoch["train_samples"] == 600
        assert epoch["train_samples_per_s"] == pytest.approx(600 / epoch["train_s"])
    history = np.load(run_dir / "history.npy")
    assert metrics["epochs"][-1]["val_acc"] == history[-1, 2]
    final = metrics["final"]
    assert 0 <= final["test_acc"] <= 100 and final["wall_s"] > final["train_s"] > 0
    assert final["data_load_s"] > 0
    versions = metrics["versions"]
    assert versions["torch"] and versions["python"] and versions["hostname"]
    json.dumps(metrics)
