"""The run directory: unique names, atomic writes, history files."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from mnist_hpc import files
from mnist_hpc.errors import UsageError
from mnist_hpc.run import rundir


def test_atomic_write_crash_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    files.atomic_write(target, "old contents")

    def crash(fd):  # the machine dies after part of the new file reached the disk
        raise OSError("simulated crash mid-write")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        files.atomic_write(target, "new contents that never land")
    assert target.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_run_ids_are_unique_even_within_one_second(tmp_path):
    made: list = []
    threads = [threading.Thread(target=lambda: made.append(rundir.create_run_dir(tmp_path, None)))
               for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 16 and all(p.is_dir() for p in made)


def test_named_run_directory_is_never_reused(tmp_path):
    rundir.create_run_dir(tmp_path, "job-1")
    with pytest.raises(UsageError, match=r"exists already; choose another --run-id"):
        rundir.create_run_dir(tmp_path, "job-1")


def test_unwritable_results_dir_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UsageError, match=r"is not writable .*--results-dir"):
        rundir.create_run_dir(blocker / "results", None)


def test_history_is_written_as_npy_and_csv(tmp_path):
    history = np.array([[90.0, 0.3, 89.5, 0.35], [95.0, 0.2, 94.0, 0.25]])
    rundir.write_history(tmp_path, history)
    loaded = np.load(tmp_path / "history.npy")
    assert loaded.dtype == np.float64 and np.array_equal(loaded, history)
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_acc,train_loss,val_acc,val_loss"
    assert [float(v) for v in lines[2].split(",")] == [1.0, 95.0, 0.2, 94.0, 0.25]


# --- one run per directory -------------------------------------------------------------------


def test_owning_a_run_directory_removes_stale_temporary_files(tmp_path):
    """A run killed during an atomic write leaves ``.NAME.XXXX.tmp`` behind; the next owner
    of the directory removes it and nothing else."""
    files.atomic_write(tmp_path / "metrics.json", "{}\n")
    stale = [tmp_path / ".checkpoint.pt.k2j4h1.tmp", tmp_path / ".metrics.json.0a9z.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    handle = rundir.lock_run_dir(tmp_path)
    handle.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [rundir.LOCK, "metrics.json"]
