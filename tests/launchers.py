"""Real launches for the end-to-end tests: one process, torchrun or mpiexec, never leaking.

Every launch runs in its own session; whatever is left of that process group when the launch
ends or times out (workers of a dead launcher, say) is killed by its group id, so a failing
test cannot leave ranks behind. Training runs that several tests compare are done once per
pytest session and shared.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, clean_env, made_once, only_run_dir

PYTHON = sys.executable
#: a small subset that still splits unevenly over 2 ranks (250 + 249 images per split) and 4
#: (125 x 3 + 124), so the all-reduced sample counts are exact only if no rank pads or drops
LIMIT = 499
#: what the equivalence runs share: the seed network, its dropout keyed per sample (so every
#: world size draws the same masks), each step's loss in steps.jsonl; 2 steps an epoch, of
#: 256 (2 ranks x 128) and 243
COMMON = ["--model", "seed", "--batch-size", "256", "--limit", str(LIMIT), "--epochs", "2",
          "--log-every", "1", "--device", "cpu", "--backend", "gloo"]


def mpiexec() -> str:
    """MPICH's hydra mpiexec (pip install mpich), next to this Python first."""
    found = shutil.which("mpiexec", path=str(Path(PYTHON).parent)) or shutil.which("mpiexec")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("mpiexec not found; CI installs it with pip install mpich")
        pytest.skip("mpiexec not found (pip install mpich mpi4py)")
    return found


def launcher(kind: str) -> list[str]:
    """The command prefix that starts 2 ranks of a Python program (1 for ``single``)."""
    if kind == "single":
        return [PYTHON]
    if kind == "torchrun":
        return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    if kind == "mpiexec":
        return [mpiexec(), "-n", "2", PYTHON]
    raise ValueError(kind)


@dataclass
class Launch:
    returncode: int
    output: str  # stdout and stderr, interleaved as they came
    seconds: float

    def __str__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f} s; output:\n{self.output}"


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def launch(command: list[str], *, timeout: float, env: dict | None = None,
           cwd: Path = REPO) -> Launch:
    """Run ``command`` to the end (or ``timeout``), then kill anything left in its group."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=cwd, env=env or clean_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process.pid)
        output, _ = process.communicate()
        pytest.fail(f"{' '.join(command)} still running after {timeout} s; output:\n{output}")
    finally:
        kill_group(process.pid)
    return Launch(process.returncode, output, time.monotonic() - started)


def train(kind: str, args: list[str], results_dir: Path, *, timeout: float = 180) -> Launch:
    return launch(launcher(kind) + ["-m", "mnist_hpc.train", *args, "--results-dir",
                                    str(results_dir)], timeout=timeout)


def trained(kind: str, shuffle: bool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of ``COMMON`` under ``kind``, trained once per pytest session."""

    def make(results: Path) -> None:
        result = train(kind, COMMON + ["--shuffle" if shuffle else "--no-shuffle"], results)
        assert result.returncode == 0, str(result)

    return only_run_dir(made_once(f"{kind}-shuffle-{shuffle}", make, tmp_path_factory))


# a short CPU run: 10 steps of 100 images an epoch
SMALL = ["--limit", "1000", "--batch-size", "100", "--device", "cpu", "--backend", "gloo",
         "--no-plots"]
