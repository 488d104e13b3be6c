"""The run directory: unique creation, atomic writes, history, metrics, plots, environment.

Every file is written to a temporary name in the same directory, flushed, then renamed over
its final name: a killed run leaves the previous version or none, never a truncated file.
Only rank 0 calls the writers here; nothing here computes a metric.
"""

from __future__ import annotations

import errno
import fcntl
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
from typing import IO, Optional

import numpy as np

from ..errors import UsageError
from ..files import REPO_DIR, atomic_write, check_path
from . import metrics_json

HISTORY_COLUMNS = ("train_acc", "train_loss", "val_acc", "val_loss")
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"  # the trained network (run.model_file)
LOCK = ".lock"  # held by the run that owns the directory; names it (host, pid)
# filesystems without locks (Lustre mounted without -o flock, some NFS set-ups)
_NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


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
            if reuse and run_dir.is_dir():
                check_not_completed(run_dir)
                return run_dir
            raise UsageError(f"run directory {run_dir} exists already; choose another "
                             f"--run-id, or continue it with --resume {run_dir}")
        except OSError as exc:
            raise UsageError(f"cannot create run directory {run_dir} ({exc.strerror}); "
                             f"choose another --run-id or --results-dir")
    raise UsageError(f"could not create a unique run directory under {root}")


def lock_run_dir(run_dir: Path) -> IO[str]:
    """Own ``run_dir`` for the life of this process: an exclusive ``flock`` on its lock file.
    Rank 0 calls it once it knows the directory and keeps the handle open until the run ends.
    The kernel drops the lock when the process dies, however it dies, so a crashed run never
    blocks the next one. A directory owned by another live run is a UsageError naming it.

    Owning the directory, the run removes the temporary files (``.NAME.XXXX.tmp``) that a run
    killed during an atomic write left behind: no live writer can own them any more."""
    path = Path(run_dir) / LOCK
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise UsageError(f"cannot open {path} ({exc.strerror}); pass --results-dir with a "
                         f"directory you can write to")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read(200).strip() or "an unknown process"
        handle.close()
        raise UsageError(f"run directory {run_dir} is in use by another run ({owner}); wait "
                         f"for it to end, or start a new run with another --run-id")
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            handle.close()
            raise
        print(f"warning: cannot lock {path} ({exc.strerror}): this filesystem has no locks, "
              f"so make sure no other run uses {run_dir}", file=sys.stderr, flush=True)
    handle.seek(0)
    handle.truncate()
    handle.write(f"host {socket.gethostname()} pid {os.getpid()}\n")
    handle.flush()
    for stale in Path(run_dir).glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    return handle


def lock_held(run_dir: Path) -> Optional[bool]:
    """Whether a live process owns ``run_dir`` (holds the lock that ``lock_run_dir`` takes):
    True or False, None where this cannot tell (no lock file, a filesystem without locks).
    A run on another node is seen only where the filesystem's locks reach every node
    (Lustre mounted with ``-o flock``, NFS). The probe is a shared lock, dropped at once."""
    try:
        handle = open(Path(run_dir) / LOCK)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # _NO_LOCKS, or any other reason the probe cannot be made
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def check_not_completed(run_dir: Path) -> None:
    """A completed run is never changed: resuming or reusing it is refused."""
    if metrics_json.status(run_dir) == metrics_json.COMPLETED:
        raise UsageError(f"run {run_dir} completed; nothing to resume; start a new run with "
                         f"another --run-id")


def model_path(run_dir: str | Path) -> Path:
    """``run_dir/model.pt``, refused with the fix when it is not there (torch-free: the
    evaluate command checks it before torch loads)."""
    fix = "give the directory of a completed run (it holds model.pt), or train one"
    check_path(str(run_dir), "run directory")
    folder = Path(run_dir)
    if not folder.is_dir():
        raise UsageError(f"run directory {folder} does not exist; {fix}")
    path = folder / MODEL
    if not path.is_file():
        raise UsageError(f"{path} does not exist: the run has not completed (or was trained "
                         f"before runs kept their model); {fix}")
    return path


def completed_message(resume: Optional[str], results_dir: str | Path,
                      run_id: Optional[str]) -> Optional[str]:
    """What to print, exiting 0, when ``--resume auto`` names a run that completed: the job
    that runs again (a requeue, a rerun script) has nothing to do. None otherwise."""
    if resume != "auto" or run_id is None:
        return None
    run_dir = Path(results_dir) / run_id
    if metrics_json.status(run_dir) != metrics_json.COMPLETED:
        return None
    return f"Run {run_dir} is complete; nothing to do (start a new run with another --run-id)"


def find_resumable(results_dir: str | Path) -> Optional[Path]:
    """The most recently checkpointed unfinished run under ``results_dir`` (--resume latest).
    Completed runs keep their last checkpoint but are skipped: "latest" means the run a
    preemption interrupted, not one that finished after it."""
    root = Path(results_dir)
    candidates = [p.parent for p in root.glob(f"*/{CHECKPOINT}")] if root.is_dir() else []
    candidates = [p for p in candidates if metrics_json.status(p) != metrics_json.COMPLETED]
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
    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": vision, "mnist_hpc": __version__, "git_commit": git_commit(),
            "cuda": torch.version.cuda, "platform": platform.platform(),
            "argv": sys.argv, "hostname": socket.gethostname()}
