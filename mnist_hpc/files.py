"""Files and command lines, shared by every entry point: repo paths, the one atomic write,
YAML reading with errors a user can act on, the one duration parser, names, argparse.

Torch-free: ``--help`` and input errors are answered before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

# run ids, study ids, sweep names: safe as a directory name and in a scheduler's job name
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise UsageError(f"{what} {value!r} may hold only letters, digits, '.', '_', '-'")
    return value


def file_mode() -> int:
    """The mode ``open`` would give a new file: mkstemp's 0600 would hide results (and the
    MNIST cache) from the rest of the group on a shared filesystem."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole:
    a temporary file in the same directory, flushed and fsynced, renamed over ``path``."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, json.dumps(payload, indent=2, default=str) + "\n")


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; unreadable files and syntax errors (with line and column) are
    UsageErrors that name ``what`` the file is."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}; check the path and permissions")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"YAML syntax error in {path}{where}: {problem}; fix the file")


# [[H:]M:]S with optional days (D-H[:M[:S]]), as PBS and Slurm write durations
_DURATION = re.compile(r"(?:(\d+)-)?(\d+(?:\.\d*)?)(?::(\d+(?:\.\d*)?))?(?::(\d+(?:\.\d*)?))?")


def parse_duration(text: str, bare_unit_s: float = 1.0, days: bool = False) -> float:
    """Seconds from ``S``, ``M:S``, ``H:M:S`` (and ``D-H[:M[:S]]`` where ``days``).

    ``bare_unit_s``: what a lone number counts (1 for PBS and --time-limit, 60 for Slurm's
    minutes). Raises ValueError naming the accepted forms."""
    match = _DURATION.fullmatch(str(text).strip())
    if not match or (match.group(1) is not None and not days):
        forms = "seconds, M:S or H:M:S" + (" or D-H:M:S" if days else "")
        raise ValueError(f"{text!r} is not a duration ({forms})")
    day, *parts = match.groups()
    numbers = [float(p) for p in parts if p is not None]
    if day is not None:  # Slurm: D-H, D-H:M, D-H:M:S
        numbers += [0.0] * (3 - len(numbers))
        return int(day) * 86400 + numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    if len(numbers) == 1:
        return numbers[0] * bare_unit_s
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds


class UsageParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like every other bad input."""

    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see {self.prog} --help)")
