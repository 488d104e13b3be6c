"""A real run's metrics.json is one its reader accepts, and the job scripts' summary of it."""

from __future__ import annotations

import re

from conftest import only_run_dir, run_trainer

from mnist_hpc import metrics as metrics_cli
from mnist_hpc.run import metrics_json


def test_a_one_epoch_run_writes_a_file_the_reader_accepts(tmp_path, capsys):
    result = run_trainer(["--limit", "600", "--epochs", "1", "--results-dir", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = only_run_dir(tmp_path)
    metrics = metrics_json.read(run_dir)
    assert metrics["status"] == metrics_json.COMPLETED and metrics["run_id"] == run_dir.name
    assert len(metrics["epochs"]) == 1 and metrics["samples"]["test"] == 600
    assert metrics_cli.main(["summary", str(run_dir)]) == 0
    assert re.fullmatch(r"startup_s [\d.]+, warmup_s 0\.00, train_s [\d.]+ \(epochs: [\d.]+\), "
                        r"test [\d.]+ %, fp32, cuda_graphs False\n", capsys.readouterr().out)
