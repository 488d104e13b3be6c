"""The run directory: unique creation, atomic writes, history, metrics, plots, environment.

Every file is written to a temporary name in the same directory, flushed, then renamed over
its final name: a killed run leaves the previous version or none, never a truncated file.
Only rank 0 calls the writers here; nothing here computes a metric.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import metrics
from .files import REPO_DIR, atomic_write
from .errors import UsageError

HISTORY_COLUMNS = ("train_acc", "train_loss", "val_acc", "val_loss")
CHECKPOINT = "checkpoint.pt"


def new_run_id() -> str:
    """Time to the second plus a random suffix: unique even for runs started together."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def create_run_dir(results_dir: str | Path, run_id: Optional[str], reuse: bool = False) -> Path:
    """Make a fresh run directory. ``mkdir`` without exist_ok is the lock: two runs can never
    share one. A named run that exists already is refused (resume it with --resume), unless
    ``reuse``: ``--resume auto`` restarts its own unfinished run that died before its first
    checkpoint (a requeued job must not fail forever on the directory it left)."""
    root = Path(results_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=root, prefix=".write-test.")
        probe.close()
    except OSError as exc:
        raise UsageError(f"results directory {root} is not writable ({exc.strerror}); "
                         f"pass --results-dir with a directory you can write to")
    for _ in range(100):
        run_dir = root / (run_id or new_run_id())
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            if run_id is None:
                continue
            if reuse and run_dir.is_dir() and metrics.status(run_dir) != "completed":
                return run_dir
            if reuse and run_dir.is_dir():
                raise UsageError(f"run {run_dir} completed already; choose another --run-id")
            raise UsageError(f"run directory {run_dir} exists already; choose another "
                             f"--run-id, or continue it with --resume {run_dir}")
    raise UsageError(f"could not create a unique run directory under {root}")


def find_resumable(results_dir: str | Path) -> Optional[Path]:
    """The most recently checkpointed unfinished run under ``results_dir`` (--resume latest).
    Completed runs keep their last checkpoint but are skipped: "latest" means the run a
    preemption interrupted, not one that finished after it."""
    root = Path(results_dir)
    candidates = [p.parent for p in root.glob(f"*/{CHECKPOINT}")] if root.is_dir() else []
    candidates = [p for p in candidates if metrics.status(p) != "completed"]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p / CHECKPOINT).stat().st_mtime)


def write_history(run_dir: Path, history: np.ndarray) -> None:
    """``history.npy`` (float64, (epochs, 4)) and ``history.csv`` with a header."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(history, dtype=np.float64).reshape(-1, 4))
    atomic_write(run_dir / "history.npy", buffer.getvalue())
    lines = ["epoch," + ",".join(HISTORY_COLUMNS)]
    lines += [f"{i}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(history)]
    atomic_write(run_dir / "history.csv", "\n".join(lines) + "\n")


def write_plots(run_dir: Path, history: np.ndarray) -> None:
    """``loss.png`` and ``accuracy.png``, drawn as the notebook draws them."""
    import matplotlib

    matplotlib.use("Agg")  # batch jobs have no display
    import matplotlib.pyplot as plt

    epochs = range(len(history))
    for name, columns, labels in (
        ("loss", (1, 3), ("training loss", "val. loss")),
        ("accuracy", (0, 2), ("training accuracy", "val. accuracy")),
    ):
        fig = plt.figure(figsize=(5, 3))
        for column, label in zip(columns, labels):
            plt.plot(epochs, history[:, column], label=label)
        plt.title(name)
        plt.xlabel("epochs")
        plt.ylabel(name)
        plt.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        atomic_write(run_dir / f"{name}.png", buffer.getvalue())


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict:
    import torch

    try:  # the installed version, without importing torchvision (0.45 s) for one string
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        vision = None
    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": vision, "mnist_hpc": __version__, "git_commit": git_commit(),
            "cuda": torch.version.cuda, "platform": platform.platform(),
            "argv": sys.argv, "hostname": socket.gethostname()}
