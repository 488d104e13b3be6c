"""``python -m mnist_hpc.runs`` on run directories that real trainer processes left: one that
completed, one that failed (tests/fault_injection.py), one that the time limit stopped, and
one still running (stopped by SIGSTOP mid-epoch, its lock held), then killed."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import time

import pytest
from conftest import REPO, clean_env, python_prints, read_metrics

from mnist_hpc.errors import EXIT_FAILURE, EXIT_PREEMPTED

FAULT_SCRIPT = str(REPO / "tests" / "fault_injection.py")


def runs_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_hpc.runs", *args], capture_output=True,
                          text=True, cwd=REPO, env=clean_env(), timeout=120)


def wait_stopped(process: subprocess.Popen, timeout: float) -> None:
    """Until ``process`` has stopped itself (state T), or fail the test."""
    deadline = time.monotonic() + timeout
    stat = f"/proc/{process.pid}/stat"
    while time.monotonic() < deadline and process.poll() is None:
        with open(stat) as handle:
            if handle.read().rpartition(")")[2].split()[0] == "T":
                return
        time.sleep(0.1)
    pytest.fail(f"the live run did not stop itself (exit code {process.poll()})")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The four runs, started together; the CSV listing taken while the live run lives.
    Returns the results directory and that listing."""
    root = tmp_path_factory.mktemp("runs")
    small = ["--limit", "600", "--device", "cpu", "--no-plots", "--results-dir", str(root)]
    quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "cwd": REPO}
    started = {
        "done": (subprocess.Popen([sys.executable, "-m", "mnist_hpc.train", *small,
                                   "--epochs", "1", "--run-id", "done"],
                                  env=clean_env(), **quiet), 0),
        "broke": (subprocess.Popen([sys.executable, FAULT_SCRIPT, *small, "--epochs", "1",
                                    "--run-id", "broke"],
                                   env=clean_env(FAULT="runtime", FAULT_RANK="0",
                                                 FAULT_STEP="1"), **quiet), EXIT_FAILURE),
        "stopped": (subprocess.Popen([sys.executable, "-m", "mnist_hpc.train", *small,
                                      "--epochs", "2", "--time-limit", "0.001",
                                      "--run-id", "stopped"],
                                     env=clean_env(), **quiet), EXIT_PREEMPTED),
    }
    live = subprocess.Popen([sys.executable, FAULT_SCRIPT, *small, "--epochs", "1",
                             "--run-id", "live"],
                            env=clean_env(FAULT="stop", FAULT_RANK="0", FAULT_STEP="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        for name, (process, expected) in started.items():
            output, _ = process.communicate(timeout=300)
            assert process.returncode == expected, f"{name}: {output}"
        wait_stopped(live, timeout=300)
        while_alive = runs_command(str(root), "--csv")
    finally:
        live.kill()  # as a lost node or a job past its walltime ends a run
        live.wait(timeout=60)
    return root, while_alive


def test_a_live_run_is_running_and_the_others_say_how_they_ended(results):
    root, listed = results
    assert listed.returncode == 0, listed.stderr
    rows = {row["run_id"]: row for row in csv.DictReader(io.StringIO(listed.stdout))}
    assert {name: row["status"] for name, row in rows.items()} == {
        "done": "completed", "broke": "failed", "stopped": "preempted", "live": "running"}
    done = rows["done"]
    assert float(done["test_acc"]) == read_metrics(root / "done")["final"]["test_acc"]
    assert (done["model"], done["ranks"], done["epochs_done"], done["epochs_planned"]) == (
        "cnn", "1", "1", "1")
    assert float(done["wall_s"]) > 0 and float(done["samples_per_s"]) > 0
    assert rows["broke"]["note"].startswith("rank 0: RuntimeError: injected failure")
    assert (rows["stopped"]["epochs_done"], rows["stopped"]["epochs_planned"]) == ("0", "2")


def test_a_killed_run_is_listed_as_probably_dead(results):
    root, _ = results
    listed = runs_command(str(root))
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert re.match(r"live\s+running\?\s+cnn\s+1\s+0/1\s+–\s+–\s+–\s+\S+ \S+\s+no process "
                    r"holds its lock", lines["live"]), lines["live"]
    test_acc = read_metrics(root / "done")["final"]["test_acc"]
    assert re.match(rf"done\s+completed\s+cnn\s+1\s+1/1\s+{test_acc:.2f}\s", lines["done"])
    assert set(lines) == {"run", "done", "broke", "stopped", "live"}


def test_compare_shows_what_differs_between_two_real_runs(results, tmp_path):
    root, _ = results
    plot = tmp_path / "done-vs-stopped.png"
    shown = runs_command("compare", "done", str(root / "stopped"), "--dir", str(root),
                         "--plot", str(plot))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    diff = out[out.index("config keys that differ:"):out.index("history")]
    assert [line.split()[0] for line in diff.splitlines()[2:] if line] == [
        "epochs", "run_id", "time_limit"]
    epoch = read_metrics(root / "done")["epochs"][0]
    row = next(line for line in out.splitlines() if line.startswith("0 "))
    assert row.split() == ["0", f"{epoch['train_acc']:.2f}", "–", f"{epoch['val_acc']:.2f}",
                           "–", f"{epoch['train_loss']:.4f}", "–", f"{epoch['val_loss']:.4f}",
                           "–"]
    assert plot.stat().st_size > 10_000 and f"Wrote {plot}" in out


def test_help_listing_and_bad_input_never_import_torch(results):
    root, _ = results
    code = (f"import sys, contextlib, io\nfrom mnist_hpc import runs\n"
            f"with contextlib.redirect_stdout(io.StringIO()), "
            f"contextlib.redirect_stderr(io.StringIO()):\n"
            f"    codes = [runs.main([{str(root)!r}]), runs.main(['{root}/missing']),\n"
            f"             runs.main(['compare', 'done', 'nobody', '--dir', {str(root)!r}])]\n"
            f"    try:\n        runs.main(['--help'])\n    except SystemExit as end:\n"
            f"        codes.append(end.code)\n"
            f"print(*codes, 'torch' in sys.modules)")
    assert python_prints(code) == ["0", "2", "2", "0", "False"]
