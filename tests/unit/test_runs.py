"""The run listing and the comparison (``python -m mnist_hpc.runs``) on run directories
written through metrics.json's own writer; the "running" runs hold a real lock, or none."""

from __future__ import annotations

import csv
import io
import os
import re

import pytest
from scaling_helpers import metrics_record

from mnist_hpc import runs
from mnist_hpc.errors import EXIT_USAGE
from mnist_hpc.run import compare, listing, metrics_json, rundir

CONFIG = {"model": "cnn", "epochs": 2, "lr": 0.001, "batch_size": 512, "seed": 1}


def write_run(results, run_id, status, *, started, config=None, epoch_s=(1.0, 1.0)):
    """A run directory as the trainer leaves it: config.yaml (its mtime: the start) and
    metrics.json with ``status``."""
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    record = metrics_record(run_id, status=status, epoch_s=epoch_s or (1.0,))
    record["epochs"] = record["epochs"][:len(epoch_s)]  # () : before its first epoch
    record["config"] = config or CONFIG
    error = "rank 1: RuntimeError: peer vanished" if status == metrics_json.FAILED else None
    metrics_json.write(run_dir, record, status, error)
    (run_dir / "config.yaml").write_text("model: cnn\n")
    os.utime(run_dir / "config.yaml", (started, started))
    return run_dir


@pytest.fixture
def results(tmp_path):
    """Every kind of run, written in an order other than their start times."""
    root = tmp_path / "results"
    write_run(root, "late-done", "completed", started=4000)
    write_run(root, "first-failed", "failed", started=1000, epoch_s=(1.0,))
    write_run(root, "stopped", "preempted", started=2000, epoch_s=(1.0,))
    write_run(root, "dead", "running", started=3000, epoch_s=())
    (root / "dead" / rundir.LOCK).write_text("host h pid 1\n")  # its owner died
    live = write_run(root, "live", "running", started=5000, epoch_s=(2.0,))
    (root / "garbled").mkdir()
    (root / "garbled" / metrics_json.FILENAME).write_text('{"schema": 1, "status": "completed"}')
    (root / "odd" / metrics_json.FILENAME).mkdir(parents=True)  # there, but not a file
    for name, started in (("garbled", 500), ("odd", 600)):  # no config.yaml: metrics.json's
        os.utime(root / name / metrics_json.FILENAME, (started, started))
    (root / "not-a-run").mkdir()  # no metrics.json: not listed
    lock = rundir.lock_run_dir(live)  # this process is the live run
    yield root
    lock.close()


def test_rows_say_what_each_run_did_oldest_first(results):
    rows = {row.run_id: row for row in listing.find_runs(results)}
    assert [r.run_id for r in listing.find_runs(results)] == [
        "garbled", "odd", "first-failed", "stopped", "dead", "late-done", "live"]
    done = rows["late-done"]
    assert (done.status, done.model, done.ranks, done.epochs_done, done.epochs_planned) == (
        "completed", "cnn", 1, 2, 2)
    assert done.test_acc == 92.5 and done.wall_s == 7.0 and done.samples_per_s == 4096.0
    assert rows["first-failed"].note == "rank 1: RuntimeError: peer vanished"
    assert rows["stopped"].status == "preempted" and rows["stopped"].test_acc is None
    assert rows["live"].status == "running" and rows["live"].samples_per_s == 2048.0
    assert rows["dead"].status == listing.MAYBE_RUNNING and "no process holds" in rows["dead"].note
    assert rows["dead"].samples_per_s is None and rows["dead"].epochs_done == 0
    assert rows["garbled"].status == listing.UNREADABLE
    assert "key 'run_id' is missing" in rows["garbled"].note
    assert (rows["odd"].status, rows["odd"].note) == (listing.UNREADABLE,
                                                      "metrics.json: Is a directory")
    assert "not-a-run" not in rows


def test_the_table_is_aligned_and_the_csv_holds_the_same_rows(results):
    found = listing.find_runs(results)
    lines = listing.table(found).splitlines()
    assert lines[0].split() == ["run", "id", "status", "model", "ranks", "epochs", "test", "%",
                                "wall", "s", "samples/s", "started", "note"]
    column = lines[0].index("status")
    assert all(line[column - 2:column] == "  " for line in lines)  # one column edge for all
    done = next(line for line in lines if line.startswith("late-done"))
    assert re.search(r"completed\s+cnn\s+1\s+2/2\s+92\.50\s+7\.0\s+4,096\s", done), done
    dead = next(line for line in lines if line.startswith("dead"))
    assert re.search(r"running\?\s+cnn\s+1\s+0/2\s+–\s+–\s+–\s", dead), dead
    rows = list(csv.DictReader(io.StringIO(listing.csv(found))))
    assert [r["run_id"] for r in rows] == [r.run_id for r in found]
    done = next(r for r in rows if r["run_id"] == "late-done")
    assert (done["epochs_done"], done["epochs_planned"], float(done["test_acc"])) == (
        "2", "2", 92.5)
    assert next(r for r in rows if r["run_id"] == "stopped")["test_acc"] == ""


def test_the_lock_probe_tells_held_free_and_unknown(tmp_path):
    assert rundir.lock_held(tmp_path) is None  # no lock file
    handle = rundir.lock_run_dir(tmp_path)
    assert rundir.lock_held(tmp_path) is True
    handle.close()
    assert rundir.lock_held(tmp_path) is False


def test_the_command_lists_and_refuses_what_is_not_there(results, tmp_path, capsys):
    assert runs.main([str(results), "--csv"]) == 0
    assert capsys.readouterr().out.startswith("run_id,status,model,ranks,epochs_done,")
    assert runs.main([str(tmp_path / "missing")]) == EXIT_USAGE
    assert re.search(r"error: results directory .*missing does not exist.*--results-dir",
                     capsys.readouterr().err)
    assert runs.main([str(tmp_path / "results" / "not-a-run")]) == 0
    assert "no runs in" in capsys.readouterr().out
    assert runs.main(["compare", "late-done", "nobody", "--dir", str(results)]) == EXIT_USAGE
    assert re.search(r"error: no run 'nobody': .*list the runs with python -m mnist_hpc.runs",
                     capsys.readouterr().err)
    assert runs.main(["compare", "late-done", "garbled", "--dir", str(results)]) == EXIT_USAGE
    assert "key 'run_id' is missing" in capsys.readouterr().err


def test_config_diff_names_only_the_keys_that_differ():
    a = {"model": "cnn", "lr": 0.001, "epochs": 2, "only_a": 1}
    b = {"model": "cnn", "lr": 0.01, "epochs": 2, "only_b": "x", "long": "y" * 100}
    assert compare.config_diff(a, b) == [("long", compare.ABSENT, "y" * 59 + "…"),
                                         ("lr", "0.001", "0.01"),
                                         ("only_a", "1", compare.ABSENT),
                                         ("only_b", compare.ABSENT, "x")]
    assert compare.config_diff({"time_limit": None}, {"time_limit": 0.5}) == [
        ("time_limit", "null", "0.5")]


def test_compare_prints_both_histories_and_writes_the_plot(results, tmp_path, capsys,
                                                           monkeypatch):
    other = write_run(results, "faster", "completed", started=6000,
                      config={**CONFIG, "lr": 0.003, "epochs": 3}, epoch_s=(1.0, 1.0, 1.0))
    plot = tmp_path / "both.png"
    assert runs.main(["compare", "late-done", str(other), "--dir", str(results),
                      "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("A: late-done (completed, epochs 2/2)\n"
                          "B: faster (completed, epochs 3/3)\n")
    diff = out[out.index("config keys that differ:"):out.index("history")].splitlines()[1:]
    assert [line.split() for line in diff if line] == [
        ["key", "A", "B"], ["epochs", "2", "3"], ["lr", "0.001", "0.003"]]
    history = out[out.index("history"):].splitlines()
    assert history[1].split()[:5] == ["epoch", "train", "acc", "A", "train"]
    assert history[2].split() == ["0", "90.00", "90.00", "91.00", "91.00", "0.3000", "0.3000",
                                  "0.3000", "0.3000"]
    assert history[4].split()[:5] == ["2", "–", "90.00", "–", "93.00"]  # A had 2 epochs
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    monkeypatch.chdir(tmp_path)  # no --plot: named after the runs, here
    assert runs.main(["compare", "late-done", "faster", "--dir", str(results)]) == 0
    assert (tmp_path / "compare-late-done-faster.png").stat().st_size > 10_000
