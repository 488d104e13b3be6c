"""Which rank said it: warnings and errors of ranks other than 0 carry ``[rank N host]``, and
``--rank-logs`` copies every rank's output to ``<run>/ranks/rank-N.log``.

Torch-free. The copy is made at the Python level (``sys.stdout``/``sys.stderr``): prints,
warnings, error lines and tracebacks; what C++ libraries write to the file descriptors (NCCL,
gloo) still goes only to the launcher's output.
"""

from __future__ import annotations

import socket
import sys
import warnings
from pathlib import Path
from typing import Optional, TextIO

RANKS_DIR = "ranks"


def tag(rank: int) -> str:
    """``[rank N host] `` for ranks other than 0; rank 0 speaks for the job, untagged."""
    return "" if rank == 0 else f"[rank {rank} {socket.gethostname()}] "


def tag_warnings(rank: int) -> None:
    """Python warnings printed by this rank start with its tag."""
    prefix = tag(rank)
    if not prefix:
        return
    original = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None) -> str:
        return prefix + original(message, category, filename, lineno, line)

    warnings.formatwarning = formatted


class _Tee:
    """A text stream writing to the original stream and to the rank's log file."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding: the original stream's
        return getattr(self.stream, name)


_log: Optional[TextIO] = None


def log_path(run_dir: Path, rank: int) -> Path:
    return run_dir / RANKS_DIR / f"rank-{rank}.log"


def copy_output(run_dir: Path, rank: int) -> None:
    """From now on, this rank's stdout and stderr also go to ``<run>/ranks/rank-N.log``."""
    global _log
    path = log_path(run_dir, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    _log = open(path, "a", buffering=1)
    sys.stdout, sys.stderr = _Tee(sys.stdout, _log), _Tee(sys.stderr, _log)


def stop_copying() -> None:
    """Put the original streams back (a caller that goes on in-process keeps no copy)."""
    global _log
    if _log is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout, sys.stderr = sys.stdout.stream, sys.stderr.stream
    _log.close()
    _log = None
