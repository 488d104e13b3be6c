"""The run's product: a one-epoch run leaves model.pt, and its model scores the run's own test
accuracy again, exactly, through ``mnist_hpc.load_model`` and through ``python -m
mnist_hpc.evaluate``; the command predicts a folder of PNGs; bad input is one line, exit 2,
answered before torch loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, clean_env, error_lines, only_run_dir, read_metrics, run_trainer
from model_checks import api_score, printed_score

from mnist_hpc.data import mnist_files

LIMIT = 600  # 480 training images in batches of 64: a model well above chance in seconds


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    result = run_trainer(["--limit", str(LIMIT), "--epochs", "1", "--batch-size", "64",
                          "--device", "cpu", "--no-plots", "--results-dir", str(results)])
    assert result.returncode == 0, result.stdout + result.stderr
    return only_run_dir(results)


def evaluate(*args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, *(["-X", "importtime"] if importtime else []),
               "-m", "mnist_hpc.evaluate", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=REPO,
                          env=clean_env())


def test_a_completed_run_keeps_its_model_as_weights_only(run_dir):
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    payload = torch.load(run_dir / "model.pt", weights_only=True)
    assert payload["model"] == "cnn" and payload["args"] == {}
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())
    assert not (run_dir / "checkpoint.pt").exists()  # one epoch: checkpoints are off


def test_the_api_scores_the_runs_test_accuracy_exactly(run_dir):
    score = api_score(run_dir, LIMIT)
    assert score.accuracy == read_metrics(run_dir)["final"]["test_acc"]
    assert score.accuracy > 30, "the model did not learn: the comparison would prove little"


def test_evaluate_scores_the_runs_test_accuracy_exactly(run_dir):
    result = evaluate(str(run_dir), "--limit", str(LIMIT))
    assert result.returncode == 0, result.stderr
    final = read_metrics(run_dir)["final"]
    score, printed = printed_score(result.stdout)
    assert score.count == LIMIT
    assert score.accuracy == final["test_acc"]
    assert printed == f"{final['test_acc']:.4f}"  # as the trainer's own last line prints it


def test_evaluate_takes_the_whole_test_split_by_default(run_dir):
    result = evaluate(str(run_dir), "--batch-size", "1000")
    assert result.returncode == 0, result.stderr
    score, _ = printed_score(result.stdout)
    assert score.count == 10_000 and 0 < score.correct < 10_000


def write_pngs(folder: Path, count: int) -> tuple[list[str], np.ndarray]:
    """The first ``count`` MNIST test images as 28x28 greyscale PNGs, plus the first one again
    as a 56x56 RGB image (converted and resized by the reader). Returns the names, sorted,
    and the images."""
    from PIL import Image

    folder.mkdir()
    images = mnist_files.load_raw(REPO / "data")["t10k-images-idx3-ubyte"][:count].numpy()
    names = []
    for i, image in enumerate(images):
        names.append(f"test-{i:03d}.png")
        Image.fromarray(image).save(folder / names[-1])
    Image.fromarray(np.repeat(np.kron(images[0], np.ones((2, 2), np.uint8))[..., None], 3, 2)
                    ).save(folder / "zz-large-rgb.png")
    (folder / "notes.txt").write_text("not an image: skipped")
    return names + ["zz-large-rgb.png"], images


def test_evaluate_predicts_each_png_as_the_model_does(run_dir, tmp_path):
    names, images = write_pngs(tmp_path / "digits", 12)
    result = evaluate(str(run_dir), "--images", str(tmp_path / "digits"))
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == names
    import mnist_hpc
    from mnist_hpc.data.dataset import to_input

    with torch.inference_mode():
        expected = mnist_hpc.load_model(run_dir)(to_input(torch.from_numpy(images),
                                                          channels_last=True))
    probabilities = torch.softmax(expected, dim=1)
    for row, want, p in zip(rows, expected.argmax(1).tolist(), probabilities):
        assert int(row[1]) == want and float(row[2]) == pytest.approx(p[want].item(), abs=1e-4)
    assert 0 <= int(rows[-1][1]) <= 9 and 0.1 <= float(rows[-1][2]) <= 1


def test_help_and_a_run_without_a_model_do_not_import_torch(tmp_path):
    for args, code in ((["--help"], 0), ([str(tmp_path)], 2)):
        result = evaluate(*args, importtime=True)
        modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                   if line.startswith("import time:") and "|" in line}
        assert result.returncode == code, result.stderr[-2000:]
        assert "mnist_hpc.files" in modules and "torch" not in modules
    assert error_lines(result.stderr) == [
        f"error: {tmp_path / 'model.pt'} does not exist: the run has not completed (or was "
        f"trained before runs kept their model); give the directory of a completed run (it "
        f"holds model.pt), or train one"]


def test_a_damaged_model_is_one_line_naming_the_file(run_dir, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    data = (run_dir / "model.pt").read_bytes()
    (copy / "model.pt").write_bytes(data[:len(data) // 2])
    result = evaluate(str(copy), "--limit", "10")
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith(f"error: cannot read {copy / 'model.pt'} (")
    assert "Traceback" not in result.stderr
