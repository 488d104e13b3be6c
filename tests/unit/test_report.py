"""The console lines of a run: an epoch line with the progress a batch log needs, and the
summary when the run completes, both read from the records metrics.json holds."""

from __future__ import annotations

from pathlib import Path

from scaling_helpers import metrics_record

from mnist_hpc.run import report


def test_durations_read_as_walltimes():
    assert [report.duration(s) for s in (0, 59.6, 3600 + 62, -1)] == [
        "0:00:00", "0:01:00", "1:01:02", "0:00:00"]


def test_the_epoch_line_gives_progress_train_loss_speed_and_eta():
    epochs = metrics_record("r", epoch_s=(10.0, 20.0))["epochs"]
    line = report.epoch_line(epochs[:1], 4, "peak memory 1 MiB")
    # three epochs left of 10.1 s each
    assert line == ("Epoch 0: val. loss: 0.3000, val. accuracy: 91.0000; epoch 1/4, train "
                    "loss 0.3000, 410 samples/s (train 10.0 s, eval 0.1 s), ETA 0:00:30; "
                    "peak memory 1 MiB")
    # the mean of both epochs (15.1 s) times the two left
    assert report.epoch_line(epochs, 4, "").split("ETA ")[1] == "0:00:30; "
    assert "epoch 2/2" in report.epoch_line(epochs, 2, "") and "ETA 0:00:00" in \
        report.epoch_line(epochs, 2, "")


def test_the_summary_fits_one_screen_and_says_where_the_model_is():
    metrics = metrics_record("run-7", ranks=2, epoch_s=(2.0, 2.0, 4.0))
    metrics["samples"]["test"] = 10_000
    metrics["epochs"][1]["val_acc"] = 99.5
    metrics["config"] = {"limit": 999}
    lines = report.summary(metrics, Path("results/run-7")).splitlines()
    assert lines == [
        "Summary of run run-7 (cnn, 2 rank(s), cpu):",
        "  validation accuracy  best 99.5000 (epoch 1), last 93.0000",
        "  test accuracy        92.5000 (loss 0.2500, 10,000 images)",
        "  wall time            0:00:13 (training 0:00:08 over 3 epoch(s))",
        "  mean throughput      1,536 samples/s while training",
        "  model                results/run-7/model.pt (python -m mnist_hpc.evaluate "
        "results/run-7 --limit 999)",
    ]
