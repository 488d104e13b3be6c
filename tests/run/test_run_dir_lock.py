"""The run directory: unique names, atomic writes, history files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO, clean_env

from mnist_hpc.errors import UsageError
from mnist_hpc.run import rundir


def test_a_run_directory_is_owned_by_one_run_at_a_time(tmp_path):
    owner = hold_lock(tmp_path)
    try:
        with pytest.raises(UsageError) as refused:
            rundir.lock_run_dir(tmp_path)
        assert str(refused.value) == (
            f"run directory {tmp_path} is in use by another run (host {socket.gethostname()} "
            f"pid {owner.pid}); wait for it to end, or start a new run with another --run-id")
    finally:
        owner.kill()
        owner.wait(timeout=30)
    # the kernel dropped the lock of the SIGKILLed owner: the next run takes the directory
    handle = rundir.lock_run_dir(tmp_path)
    assert (tmp_path / rundir.LOCK).read_text() == (f"host {socket.gethostname()} "
                                                     f"pid {os.getpid()}\n")
    handle.close()


def hold_lock(run_dir) -> subprocess.Popen:
    """Another process that owns ``run_dir``, as a run's rank 0 does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO,
                            env=clean_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


HOLD = """
import sys, time
from pathlib import Path
from mnist_hpc.run import rundir
handle = rundir.lock_run_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(600)
"""
