"""Reliability end to end: lost nodes, preemption signals, time limits, failing ranks.

Every test runs the real trainer in real processes under a real launcher (torchrun, mpiexec,
or the launcher's environment set by hand) on CPU. Resumed runs must reproduce an
uninterrupted run's history *exactly* (np.array_equal): on CPU the numbers are deterministic,
so any difference means a piece of state (weights, optimizer moments, step position, RNG,
shuffle order) was not carried over.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import (REPO, clean_env, error_lines, made_once, rank_tag, read_metrics,
                      run_trainer)
from fault_injection import MESSAGES, descendants, kill_all_at_once, wait_until_gone


# 8 steps of 64 per epoch, 3 epochs: long enough to interrupt, short enough for 2 cores
ARGS = ["--limit", "512", "--batch-size", "64", "--epochs", "3", "--device", "cpu",
        "--no-plots"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2"]
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent))
FAULT_SCRIPT = str(REPO / "tests" / "fault_injection.py")
TRACEBACK = "Traceback (most recent call last)"

needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec (pip install mpich) missing")


def mpiexec(n: int = 2) -> list[str]:
    return [MPIEXEC, "-n", str(n), sys.executable]


def command(args: list[str], launcher: list[str] | None = None) -> list[str]:
    """The trainer's command line; torchrun takes ``-m`` itself, like python does."""
    return (launcher or [sys.executable]) + ["-m", "mnist_hpc.train", *args]


_STARTED: list[subprocess.Popen] = []


def popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    """subprocess.Popen, remembered so that a failed test leaves no process tree behind."""
    proc = subprocess.Popen(cmd, cwd=REPO, text=True, **kwargs)
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            kill_all_at_once([proc.pid, *descendants(proc.pid)])
            proc.wait(timeout=30)


def start(args: list[str], tmp_path: Path, launcher: list[str] | None = None,
          env: dict | None = None, name: str = "run") -> subprocess.Popen:
    """Start the trainer in the background; stdout is a pipe, stderr goes to a file."""
    with open(tmp_path / f"{name}.stderr", "w") as stderr:
        return popen(command(args, launcher), env=env or clean_env(), stdout=subprocess.PIPE,
                     stderr=stderr)


def wait_for_line(proc: subprocess.Popen, pattern: str, timeout: float = 120) -> str:
    """Read the trainer's stdout until a line matches (training starts after 'steps/epoch').
    A trainer silent for ``timeout`` seconds is killed, which ends the blocking read."""
    watchdog = threading.Timer(timeout, lambda: kill_all_at_once([proc.pid,
                                                                   *descendants(proc.pid)]))
    watchdog.start()
    seen = []
    try:
        for line in iter(proc.stdout.readline, ""):
            seen.append(line)
            if re.search(pattern, line):
                return line
    finally:
        watchdog.cancel()
    raise AssertionError(f"no line matching {pattern!r} in {''.join(seen)!r}")


def history(run_dir: Path) -> np.ndarray:
    return np.load(run_dir / "history.npy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def snapshot(folder: Path) -> dict:
    """Every file below ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def environ_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode()
    except OSError:
        return ""


def reference_history(launcher: list[str] | None, tmp_path_factory) -> np.ndarray:
    """The history of an uninterrupted run with ARGS, made once per test session."""

    def make(results: Path) -> None:
        result = run_trainer([*ARGS, "--results-dir", str(results), "--run-id", "ref"],
                             launcher=launcher, timeout=180)
        assert result.returncode == 0, result.stderr[-3000:]

    name = "reliability-reference-" + ("two-ranks" if launcher else "one-rank")
    return history(made_once(name, make, tmp_path_factory) / "ref")


@pytest.fixture
def reference_two_ranks(tmp_path_factory) -> np.ndarray:
    return reference_history(TORCHRUN, tmp_path_factory)


@pytest.fixture
def reference_one_rank(tmp_path_factory) -> np.ndarray:
    return reference_history(None, tmp_path_factory)


# --- a lost node: SIGKILL to the launcher and every rank at once -----------------------------

def test_lost_node_leaves_no_orphans_and_resume_is_exact(tmp_path, reference_two_ranks):
    run_dir = tmp_path / "results" / "lost"
    args = [*ARGS, "--results-dir", str(tmp_path / "results"), "--run-id", "lost"]
    launcher = start(args, tmp_path, TORCHRUN)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoint.pt").exists():  # epoch 0 done, its checkpoint written
            assert launcher.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        tree = [launcher.pid, *descendants(launcher.pid)]
        assert len(tree) >= 3, f"expected torchrun and two ranks, found {tree}"
        kill_all_at_once(tree)
    finally:
        launcher.kill()
        launcher.wait(timeout=30)
        launcher.stdout.close()

    assert wait_until_gone(tree, timeout=10) == [], "processes survived the lost node"
    before = snapshot(run_dir)
    time.sleep(2)
    assert snapshot(run_dir) == before, "files changed after every process was killed"
    # whatever the kill interrupted, no final name holds a partial file
    assert read_metrics(run_dir)["status"] == "running"
    assert history(run_dir).shape[1] == 4

    result = run_trainer([*ARGS, "--resume", str(run_dir)], launcher=TORCHRUN, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"Resuming .* at epoch [12], step 0", result.stdout)
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert len(metrics["resumed_from"]) == 1 and len(metrics["epochs"]) == 3
    assert np.array_equal(history(run_dir), reference_two_ranks), (
        f"resumed {history(run_dir)} != uninterrupted {reference_two_ranks}")


# --- preemption signals ----------------------------------------------------------------------

def test_sigusr1_mid_epoch_checkpoints_and_resume_is_exact(tmp_path, reference_one_rank):
    run_dir = tmp_path / "results" / "usr1"
    args = [*ARGS, "--results-dir", str(tmp_path / "results"), "--run-id", "usr1"]
    proc = start(args, tmp_path)
    wait_for_line(proc, r"steps/epoch")  # the next thing the trainer does is step 1 of epoch 0
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    stderr = (tmp_path / "run.stderr").read_text()
    assert proc.returncode == 75, stderr
    match = re.search(r"Stopping early \(signal SIGUSR1\) at epoch 0, step (\d+); checkpoint "
                      r"written\. Resume with --resume (\S+)", out)
    assert match and 1 <= int(match.group(1)) < 8, out  # mid-epoch: 8 steps per epoch
    assert Path(match.group(2)) == run_dir
    assert read_metrics(run_dir)["status"] == "preempted"
    assert (run_dir / "checkpoint.pt").is_file()
    assert error_lines(stderr) == [] and TRACEBACK not in stderr

    result = run_trainer([*ARGS, "--resume", str(run_dir)], timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at epoch 0, step {match.group(1)}" in result.stdout
    assert read_metrics(run_dir)["status"] == "completed"
    assert np.array_equal(history(run_dir), reference_one_rank), (
        f"resumed {history(run_dir)} != uninterrupted {reference_one_rank}")


@needs_mpiexec
def test_sigusr1_to_mpiexec_stops_both_ranks_and_resume_is_exact(tmp_path, reference_two_ranks):
    """mpiexec (hydra) forwards SIGUSR1 to its ranks, unlike torchrun (pytorch#154849). The
    ranks agree to stop through an all-reduce every stop_check_every steps, checkpoint, and
    exit 75, which mpiexec passes on. (MPICH's MPI_Finalize leaves a SIGUSR1 handler that
    swallows the signal; the trainer takes the signal back after the rendezvous.)"""
    config = tmp_path / "every3.yaml"
    config.write_text((REPO / "mnist_hpc" / "presets" / "default.yaml").read_text()
                      + "stop_check_every: 3\n")
    run_dir = tmp_path / "results" / "mpi"
    args = [*ARGS, "--config", str(config), "--results-dir", str(tmp_path / "results"),
            "--run-id", "mpi"]
    proc = start(args, tmp_path, mpiexec())
    wait_for_line(proc, r"world size 2 .*steps/epoch")
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    stderr = (tmp_path / "run.stderr").read_text()
    assert proc.returncode == 75, stderr
    match = re.search(r"Stopping early \(signal SIGUSR1\) at epoch 0, step (\d+)", out)
    assert match and int(match.group(1)) in (3, 6), out  # a check step, mid-epoch
    assert read_metrics(run_dir)["status"] == "preempted"
    assert TRACEBACK not in stderr

    result = run_trainer(["--config", str(config), *ARGS, "--resume", str(run_dir)],
                         launcher=mpiexec(), timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(run_dir)["status"] == "completed"
    # the same numbers as the torchrun run: the launcher changes nothing but the plumbing
    assert np.array_equal(history(run_dir), reference_two_ranks)


SHORT_EPOCHS = ["--limit", "128", "--batch-size", "64", "--epochs", "30", "--device", "cpu",
                "--no-plots"]


@needs_mpiexec
def test_sigterm_to_mpiexec_stops_at_the_end_of_an_epoch_shorter_than_the_check(tmp_path):
    """With 2 steps per epoch and the default check every 10 steps, a stop request must still
    be honoured, at the end of the epoch (it used to be ignored until the run completed)."""
    args = [*SHORT_EPOCHS, "--results-dir", str(tmp_path / "results"), "--run-id", "short"]
    proc = start(args, tmp_path, mpiexec())
    wait_for_line(proc, r"2 steps/epoch")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, (tmp_path / "run.stderr").read_text()
    assert re.search(r"Stopping early \(signal SIGTERM\) after epoch \d+; checkpoint written",
                     out), out
    metrics = read_metrics(tmp_path / "results" / "short")
    assert metrics["status"] == "preempted" and len(metrics["epochs"]) < 30


def test_signal_to_one_torchrun_worker_stops_every_rank(tmp_path):
    """torchrun forwards no SIGUSR1, so a batch script signals the workers itself; a signal
    that reaches rank 1 alone must still stop both ranks together, with a checkpoint."""
    args = [*SHORT_EPOCHS, "--results-dir", str(tmp_path / "results"), "--run-id", "one"]
    proc = start(args, tmp_path, TORCHRUN)
    wait_for_line(proc, r"2 steps/epoch")
    workers = [pid for pid in descendants(proc.pid) if "mnist_hpc.train" in cmdline(pid)]
    rank1 = [pid for pid in workers if "RANK=1" in environ_of(pid).splitlines()]
    assert len(workers) == 2 and len(rank1) == 1, workers
    os.kill(rank1[0], signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    stderr = (tmp_path / "run.stderr").read_text()
    # rank 0 did not get the signal itself, and says so
    assert re.search(r"Stopping early \(a signal received by another rank\) after epoch \d+; "
                     r"checkpoint written", out), out
    metrics = read_metrics(tmp_path / "results" / "one")
    assert metrics["status"] == "preempted" and len(metrics["epochs"]) < 30
    assert (tmp_path / "results" / "one" / "checkpoint.pt").is_file()
    # torchrun turns its workers' 75 into its own 1, but its report keeps theirs (a worker
    # still shutting down when the first one exits gets torchrun's SIGTERM: -15)
    assert proc.returncode == 1
    codes = re.findall(r"^\s*exitcode\s+:\s*(-?\d+)", stderr, re.MULTILINE)
    assert len(codes) == 2 and "75" in codes and set(codes) <= {"75", "-15"}, stderr


# --- the time limit and --resume auto, as a requeued job uses them ---------------------------

def test_time_limit_stops_cleanly_and_resume_auto_continues_exactly(tmp_path, reference_one_rank):
    results = tmp_path / "results"
    args = [*ARGS, "--results-dir", str(results), "--run-id", "job-42", "--resume", "auto"]
    # first start: nothing to resume, so it starts fresh; the walltime (H:MM:SS, with the
    # trainer's reserve of 5 s) ends it early
    first = run_trainer([*args, "--time-limit", "0:00:08"], timeout=180)
    assert first.returncode == 75, first.stderr[-3000:]
    assert "Resuming" not in first.stdout
    assert re.search(r"Stopping early \(time limit\) (at|after) epoch", first.stdout), first.stdout
    assert error_lines(first.stderr) == [] and TRACEBACK not in first.stderr
    run_dir = results / "job-42"
    assert read_metrics(run_dir)["status"] == "preempted"
    assert (run_dir / "checkpoint.pt").is_file()

    # the requeued job: the same command line finds the checkpoint and finishes the run
    second = run_trainer(args, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming {run_dir} at epoch" in second.stdout
    assert [p.name for p in results.iterdir()] == ["job-42"]
    assert read_metrics(run_dir)["status"] == "completed"
    assert np.array_equal(history(run_dir), reference_one_rank)


# --- a rank that fails, a rank that never joins ----------------------------------------------

def two_ranks_by_hand(args: list[str], tmp_path: Path, script: str | None = None,
                      **extra: str) -> list[subprocess.Popen]:
    """Rank 0 and rank 1 started with torchrun's variables set by hand: no launcher is there
    to kill the survivor, so each rank must end by itself."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = clean_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                        LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                        **extra)
        cmd = ([sys.executable, script] if script else [sys.executable, "-m", "mnist_hpc.train"])
        procs.append(popen(cmd + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


# a collective timeout far beyond start-up on a loaded 2-core machine: only a rank that waited
# for it takes that long
FAILURE_TIMEOUT = 120


def test_rank_that_raises_ends_every_rank_with_one_clear_line(tmp_path):
    timeout = FAILURE_TIMEOUT
    args = [*ARGS, "--results-dir", str(tmp_path / "results"), "--run-id", "oom",
            "--timeout", str(timeout)]
    started = time.monotonic()
    procs = two_ranks_by_hand(args, tmp_path, FAULT_SCRIPT, FAULT_RANK="1", FAULT_STEP="2")
    outputs = [proc.communicate(timeout=timeout + 90) for proc in procs]
    # start-up and two steps, then every rank gone: well within the collective timeout
    assert time.monotonic() - started < timeout
    codes = [proc.returncode for proc in procs]
    assert codes == [1, 1], outputs
    rank1_errors = error_lines(outputs[1][1])
    assert rank1_errors == [f"{rank_tag(1)}error: rank 1 failed: OutOfMemoryError: "
                            f"{MESSAGES['oom']}; at epoch 0, step 3"]
    rank0_errors = error_lines(outputs[0][1])
    assert len(rank0_errors) == 1 and rank0_errors[0].startswith("error: rank 0 failed: ")
    assert TRACEBACK not in outputs[0][1] + outputs[1][1]
    metrics = read_metrics(tmp_path / "results" / "oom")
    assert metrics["status"] == "failed"
    assert metrics["error"].startswith("rank 0: ") and "\n" not in metrics["error"]


@pytest.mark.waits
def test_rank_that_never_joins_fails_within_the_timeout_with_a_clear_line(tmp_path):
    """Rank 0 alone waits for its peer; rank 1 alone waits for rank 0. Both give up after
    --timeout with one line that says what to check, instead of hanging until walltime;
    rank 0's names the rank that never joined."""
    timeout = 10
    args = ["--limit", "64", "--epochs", "1", "--results-dir", str(tmp_path / "results"),
            "--timeout", str(timeout)]
    procs = []
    for rank in (0, 1):  # each alone, on a port of its own
        env = clean_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        procs.append(popen(command(args), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE))
    started = time.monotonic()
    outputs = [proc.communicate(timeout=timeout + 90) for proc in procs]
    elapsed = time.monotonic() - started
    assert [proc.returncode for proc in procs] == [1, 1], outputs
    assert elapsed < timeout + 60  # start-up included, on a loaded machine
    for rank, (_, stderr) in enumerate(outputs):
        lines = error_lines(stderr)
        assert len(lines) == 1, stderr
        assert TRACEBACK not in stderr
        if rank == 1 and " did not complete within --timeout" in lines[0]:
            # rank 1's store client retries its connection past its own timeout: the
            # deadline (dist.DEADLINE_GRACE_S later) ends the wait with its own line
            assert lines[0].startswith("error: rank 1: rendezvous with 127.0.0.1:"), lines[0]
            continue
        assert lines[0].startswith(f"{rank_tag(rank)}error: rank {rank} failed to start the "
                                   f"process group: ")
        assert lines[0].endswith("check that every rank started and can reach rank 0 "
                                 "(MASTER_ADDR, MASTER_PORT), or raise --timeout")
    # rank 0 holds the store: it names the rank that never came
    assert "; rank 1 of 2 never joined; check that every rank" in error_lines(outputs[0][1])[0]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


# --- many runs at once into one results directory --------------------------------------------

def test_parallel_runs_get_distinct_complete_run_directories(tmp_path):
    results = tmp_path / "results"
    args = ["--limit", "256", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
            "--results-dir", str(results)]
    env = clean_env()
    cores = sorted(os.sched_getaffinity(0))

    def launch(extra: list[str], index: int) -> subprocess.Popen:
        # each run bound to one core, as a scheduler would: ten runs each spinning as many
        # threads as the machine has cores would take minutes on a small CI machine
        core = {cores[index % len(cores)]}
        return popen(command(args + extra), env=env, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, preexec_fn=lambda: os.sched_setaffinity(0, core))

    unnamed = [launch([], i) for i in range(3)]
    twins = [launch(["--run-id", "twin"], i) for i in range(2)]
    outputs = [proc.communicate(timeout=300) for proc in unnamed + twins]
    assert [proc.returncode for proc in unnamed] == [0] * 3, [o[1][-2000:] for o in outputs]
    # two runs asking for the same name: one gets it, the other is refused, none shares it
    assert sorted(proc.returncode for proc in twins) == [0, 2]
    loser = outputs[3 + [proc.returncode for proc in twins].index(2)][1]
    assert error_lines(loser) == [f"error: run directory {results / 'twin'} exists already; "
                                  f"choose another --run-id, or continue it with --resume "
                                  f"{results / 'twin'}"]

    dirs = sorted(p for p in results.iterdir() if p.is_dir())
    assert len(dirs) == 4
    printed = {re.search(r"Run directory: (\S+)", out).group(1) for out, _ in outputs[:3]}
    assert printed == {str(p) for p in dirs if p.name != "twin"}
    for run_dir in dirs:
        metrics = read_metrics(run_dir)
        assert metrics["status"] == "completed" and metrics["run_id"] == run_dir.name
        assert history(run_dir).shape == (1, 4)
        names = {p.name for p in run_dir.iterdir()}
        assert {"config.yaml", "history.csv", "metrics.json", "loss.png"} <= names
        assert not [n for n in names if n.endswith(".tmp")], names
