"""Shared test set-up: the tiers, the Hypothesis profiles, MNIST read once, no launcher
variable leaking into a test, and helpers to run the trainer.

Tiers, decided by the directory a test lives in (docs/development.md):
  unit/     in this process, no trainer or launcher process: ``pytest tests/unit`` before
            every commit
  run/      one trainer (``python -m mnist_hpc.train`` or ``train.main`` in this process),
            the shell helpers of the job scripts, the command lines' own processes
  cluster/  real launchers: torchrun, mpiexec, a Slurm cluster, network namespaces, the PBS
            template run as PBS runs it
Each test gets its tier as a marker too (``-m "not cluster"``); tests marked ``waits`` start
first.

A stale RANK or MASTER_ADDR from the shell that runs pytest would turn a single-process test
into a rendezvous that waits forever, so every test starts without them.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent
TIERS = ("unit", "run", "cluster")

# a few examples each for a quick run; CI (CI set) tries many more
settings.register_profile("dev", max_examples=6)
settings.register_profile("ci", max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(items):
    for item in items:
        tier = Path(str(item.path)).parent.name
        if tier in TIERS:
            item.add_marker(tier)
    # tests that spend most of their time waiting go first: their waits then overlap the other
    # workers' work instead of leaving the cores idle at the end of the run
    items.sort(key=lambda item: item.get_closest_marker("waits") is None)


SHARED_FIXTURE = re.compile(r'@pytest\.fixture\(scope="module"')


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it is installed
def pytest_xdist_make_scheduler(config, log):
    """Under ``-n`` (pytest-xdist) every test is its own unit of work, except in files that
    share a module-scoped fixture (a trainer run): such a file goes whole to one worker, so the
    run is made once. (xdist's own groups do not survive pytest 9's node ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    shared = {str(path.relative_to(REPO)) for path in (REPO / "tests").glob("*/test_*.py")
              if SHARED_FIXTURE.search(path.read_text())}

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in shared else nodeid

    return SharedFixtureScheduling(config, log)


def pytest_configure(config):
    # each xdist worker is one of several processes on the machine's cores: one torch
    # thread each instead of every worker starting one per core. The environment says so
    # too: a trainer run in this process sets its threads from OMP_NUM_THREADS (else from
    # the cores: 2 threads in each of 3 workers on 2 cores once cost the ViT's bf16 resume
    # test 13 s of CPU instead of 3)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _mnist_read_once():
    """The decompressed MNIST cache exists before any test: every trainer process the tests
    start reads it as it is, and this process parses it once (mnist_files keeps it)."""
    from mnist_hpc.data import mnist_files

    mnist_files.load_raw(REPO / "data")


@pytest.fixture
def data_copy(tmp_path) -> Path:
    """A private data dir holding the four .gz files, to corrupt at will."""
    from mnist_hpc.data import mnist_files

    raw = mnist_files.raw_dir(tmp_path)
    raw.mkdir(parents=True)
    for name in mnist_files.FILES:
        shutil.copy(REPO / "data" / "MNIST" / "raw" / f"{name}.gz", raw)
    return tmp_path


LAUNCHER_PREFIXES = ("SLURM_", "PMI_", "PALS_", "OMPI_", "PBS_", "TORCHELASTIC_", "MPI_LOCAL")
LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                  "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_CONTROL_FD")


def is_launcher_variable(name: str) -> bool:
    return name in LAUNCHER_NAMES or name.startswith(LAUNCHER_PREFIXES)


def clean_env(**extra: str) -> dict:
    """os.environ without launcher variables, with the repo importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not is_launcher_variable(k)}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _no_launcher_variables(monkeypatch):
    for name in list(os.environ):
        if is_launcher_variable(name):
            monkeypatch.delenv(name)


# an error line as printed: ranks other than 0 tag theirs with "[rank N host] "
ERROR_LINE = re.compile(r"(\[rank [1-9]\d* [^\]]+\] )?error:")


def rank_tag(rank: int) -> str:
    """How a rank's warnings and errors begin: rank 0 speaks for the job, untagged."""
    return "" if rank == 0 else f"[rank {rank} {socket.gethostname()}] "


def error_lines(text: str) -> list[str]:
    """The error lines of a process's output, each as printed (with its rank tag)."""
    return [line for line in text.splitlines() if ERROR_LINE.match(line)]


def python_prints(code: str) -> list[str]:
    """What ``python -c code`` prints, split into words, in a fresh interpreter (imports and
    side effects seen from a clean process)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def run_trainer(args: list[str], *, launcher: list[str] | None = None, timeout: float = 300,
                cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_hpc.train`` (optionally under a launcher) as a real process."""
    command = (launcher or [sys.executable]) + ["-m", "mnist_hpc.train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env=env or clean_env())


def train_in_this_process(argv: list[str]) -> tuple[int, str, str]:
    """``train.main`` in this process, which has torch loaded already: its exit code and what
    it printed. Anything escaping ``main`` fails the test."""
    from mnist_hpc import train

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train.main(argv)
    return code, out.getvalue(), err.getvalue()


def read_metrics(run_dir: Path) -> dict:
    """A run's metrics.json, through the one reader: a file off its schema fails the test."""
    from mnist_hpc.run import metrics_json

    return metrics_json.read(run_dir)


def only_run_dir(results_dir: Path) -> Path:
    """The single run directory a run created under ``results_dir``."""
    runs = [p for p in results_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    return runs[0]


def made_once(name: str, make: Callable[[Path], None],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that ``make`` fills once per test session, however many xdist workers ask:
    the first one makes it under a lock while the others wait, then all read it. (A run that
    several tests compare is trained once, not once per worker that runs one of them.)"""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    folder = root / "made-once" / name
    folder.parent.mkdir(exist_ok=True)
    with open(folder.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)  # a failed attempt's leftovers
            folder.mkdir()
            make(folder)
            (folder / ".done").touch()
    return folder
