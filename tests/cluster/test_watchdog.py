"""A job ends or fails loudly, never hangs: a stopped (not dead) rank under mpiexec and
torchrun (ended soon after the timeout, its collective named, every stack written), a
rendezvous whose port is held by a process that never answers, and SIGTERM to a rank that has
not started training. Real trainers, real launchers, real sockets.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, clean_env, only_run_dir, read_metrics
from fault_injection import descendants, kill_all_at_once


PYTHON = sys.executable
MPIEXEC = shutil.which("mpiexec", path=str(Path(PYTHON).parent))
TORCHRUN = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# 64 steps per epoch: training is still going when rank 1 is stopped
ARGS = ["--limit", "4096", "--batch-size", "64", "--epochs", "2", "--device", "cpu", "--no-plots"]
TIMEOUT = 10  # --timeout of the stuck-rank tests
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec (pip install mpich) missing")


class SilentListener:
    """A loopback port held by a process that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            self.accepted.set()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.sock.close()


@pytest.fixture
def silent_port():
    listener = SilentListener()
    yield listener
    listener.close()


FAULT_SCRIPT = str(REPO / "tests" / "fault_injection.py")


def run_with_rank_1_stopped(launcher: list[str], limit: float,
                            results: Path) -> tuple[float, int, str]:
    """Launch the trainer with rank 1 set to stop itself by SIGSTOP after 2 steps
    (tests/fault_injection.py); return the seconds from its stop until the launcher ended,
    the launcher's exit code and its output after the stop. Whatever is left is killed."""
    command = [*launcher, FAULT_SCRIPT, *ARGS, "--timeout", str(TIMEOUT), "--results-dir",
               str(results)]
    proc = subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env=clean_env(FAULT="stop", FAULT_RANK="1", FAULT_STEP="2"))
    stopped = None
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            match = re.search(r"rank 1 \(pid (\d+)\) sends itself SIGSTOP", line)
            if match:
                stopped = int(match.group(1))
                break
        else:
            raise AssertionError("rank 1 never stopped:\n" + "".join(seen))
        started = time.monotonic()
        rest, _ = proc.communicate(timeout=limit)
        return time.monotonic() - started, proc.returncode, rest
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the job still ran {limit} s after rank 1 was stopped")
    finally:
        kill_all_at_once([proc.pid, *descendants(proc.pid)] + ([stopped] if stopped else []))
        proc.communicate(timeout=30)


def assert_the_stop_is_explained(output: str, results: Path) -> None:
    """Rank 0's one line names the collective, where, and who never answered; its stacks
    (the frames the error unwound, then every thread) are in ranks/rank-0.txt."""
    assert re.search(r"^error: rank 0 failed: .*Timed out.*; during the all-reduce of "
                     r"gradients, epoch 0, step 3; no word from rank 1 on "
                     + re.escape(socket.gethostname()) + r" \(stopped, hung or dead\)",
                     output, re.MULTILINE), output
    run_dir = only_run_dir(results)
    stacks = (run_dir / "ranks" / "rank-0.txt").read_text()
    assert "rank 0 failed during all-reduce of gradients, epoch 0, step 3" in stacks
    assert "in train_one_epoch" in stacks, stacks
    assert re.search(r"(Current thread|Thread) 0x", stacks), stacks
    assert (run_dir / "ranks" / "rank-1.txt").read_text() == ""  # stopped: it cannot write
    assert "no word from rank 1" in read_metrics(run_dir)["error"]


@pytest.mark.waits
@needs_mpiexec
def test_a_stopped_rank_under_mpiexec_ends_the_job_soon_after_the_timeout(tmp_path):
    """Rank 0's collective times out; the entry point then ends itself by SIGKILL
    (watchdog.end_job_on_failure), which makes hydra kill the stopped rank too. Without it
    mpiexec waits forever."""
    seconds, code, rest = run_with_rank_1_stopped([MPIEXEC, "-n", "2", PYTHON], TIMEOUT + 60,
                                                  tmp_path)
    assert code == 9, rest  # hydra: "BAD TERMINATION ... EXIT CODE: 9"
    assert "BAD TERMINATION" in rest and "Traceback" not in rest
    assert seconds < TIMEOUT + 15, f"ended {seconds:.1f} s after the stop"
    assert_the_stop_is_explained(rest, tmp_path)


@pytest.mark.waits
def test_a_stopped_rank_under_torchrun_ends_the_job(tmp_path):
    """torchrun's agent ends the job itself: SIGTERM, then SIGKILL after its 30 s grace."""
    seconds, code, rest = run_with_rank_1_stopped([*TORCHRUN], TIMEOUT + 90, tmp_path)
    assert code == 1, rest
    assert seconds < TIMEOUT + 60, f"ended {seconds:.1f} s after the stop"
    assert_the_stop_is_explained(rest, tmp_path)


def rank_1_env(port: int) -> dict:
    """Rank 1 of a torchrun-style job by hand, its rendezvous at ``port``."""
    return clean_env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


@pytest.mark.waits
def test_rendezvous_with_a_silent_port_fails_within_the_timeout(tmp_path, silent_port):
    command = [PYTHON, "-m", "mnist_hpc.train", "--limit", "64", "--epochs", "1", "--device",
               "cpu", "--timeout", "5", "--results-dir", str(tmp_path)]
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=rank_1_env(silent_port.port),
                            capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert silent_port.accepted.is_set(), "the rank never reached the listener"
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(rf"error: rank 1: rendezvous with 127\.0\.0\.1:{silent_port.port} did "
                        rf"not complete within --timeout 5 s; check .*", lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert seconds < 5 + 60  # the interpreter and torch start in the rest
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_rank_waiting_for_its_rendezvous(tmp_path, silent_port, signum):
    command = [PYTHON, "-m", "mnist_hpc.train", "--limit", "64", "--epochs", "1", "--device",
               "cpu", "--timeout", "600", "--results-dir", str(tmp_path)]
    proc = subprocess.Popen(command, cwd=REPO, env=rank_1_env(silent_port.port),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert silent_port.accepted.wait(timeout=120), "the rank never reached the listener"
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == -signum
    finally:
        proc.kill()
        proc.wait(timeout=30)
