"""``python -m mnist_hpc.train`` in a fresh process, start-up and writing included: the benches
that time the whole command (``race``, ``allocator``) start it here."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ..files import REPO_DIR


def run_train(args: list[str], environ: dict) -> float:
    """The trainer with ``args`` under ``environ``, to its end: its wall seconds. This package's
    directory goes first on PYTHONPATH, so a checkout times its own code. A failed run raises,
    with the last line of its stderr."""
    command = [sys.executable, "-m", "mnist_hpc.train", *args]
    env = {**environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR),
                                                                  environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {last}")
    return wall_s
