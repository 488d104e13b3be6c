"""Files and command lines, shared by every entry point: repo paths, the one atomic write,
YAML reading with errors a user can act on, the one duration parser, names, argparse.

Torch-free: ``--help`` and input errors are answered before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import reprlib
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import UsageError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent

# run ids, study ids, sweep names: safe as a directory name and in a scheduler's job name
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def short(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to about ``width`` characters: a user's value quoted in an error
    line (a 10 MB string, a list of a million items) must not become a 10 MB line."""
    cut = reprlib.Repr()
    cut.maxstring = cut.maxother = width
    cut.maxlist = cut.maxtuple = cut.maxdict = cut.maxset = 6
    cut.maxlevel = 3
    return cut.repr(value)


def check_path(path: str, what: str) -> None:
    """Refuse a path that cannot even be looked up (too long, a symlink loop, a folder on
    the way that this user may not enter): later ``is_file`` and ``is_dir`` checks would
    raise instead of answering. A path that does not exist passes: the reader of that
    path says what it should hold."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{what} {short(path, 200)}: {reason}; give a path you can read")


# a run directory's name, also in job names: ext4 allows 255 bytes, leave room for suffixes
MAX_NAME = 128


def check_name(value: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise UsageError(f"{what} {short(value)} may hold only letters, digits, '.', '_', '-'")
    if len(value) > MAX_NAME:
        raise UsageError(f"{what} {short(value)} is {len(value)} characters long; use at most "
                         f"{MAX_NAME}")
    return value


def file_mode() -> int:
    """The mode ``open`` would give a new file: mkstemp's 0600 would hide results (and the
    MNIST cache) from the rest of the group on a shared filesystem."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole:
    a temporary file in the same directory, flushed and fsynced, renamed over ``path``. A
    storage error (disk full, the directory gone) is raised naming ``path``: the OS's own
    message names no file or the temporary one."""
    payload = data.encode() if isinstance(data, str) else data
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, json.dumps(payload, indent=2, default=str) + "\n")


# A config or sweep file is a few dozen keys. Aliases are allowed (a sweep may share a value
# between its pbs and slurm sections), but the document they expand to may not exceed this
# many nodes: nine nested aliases of nine items each ("billion laughs") make a 431-byte file
# expand to a billion, which a validator's error message or json.dumps would then walk.
MAX_YAML_NODES = 100_000


def _expanded_nodes(node: yaml.Node, sizes: dict[int, int], limit: int) -> int:
    """Nodes in the document once every alias is expanded; ``limit + 1`` once past
    ``limit``, and for a node that contains itself (``&a [*a]``). Each distinct node is
    counted once (``sizes``), so this is linear in the file, not in its expansion."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = limit + 1  # seen again before it is done: a cycle
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_nodes(child, sizes, limit)
        if total > limit:
            break
    sizes[key] = min(total, limit + 1)
    return sizes[key]


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand past MAX_YAML_NODES."""

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        if _expanded_nodes(node, {}, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise UsageError(f"holds more than {MAX_YAML_NODES:,} values, counting each alias "
                             f"as the values it stands for (or an alias refers to itself); "
                             f"write out the values the run needs")
        return node


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; unreadable files, syntax errors (with line and column), nesting
    too deep to parse and aliases that expand without bound are UsageErrors that name
    ``what`` the file is."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}; check the path and permissions")
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"YAML syntax error in {path}{where}: {problem}; fix the file")
    except UsageError as exc:
        raise UsageError(f"{what} {path} {exc}")
    except ValueError as exc:  # a value its tag cannot build: 10,000 digits, !!float abc
        raise UsageError(f"{what} {path} holds a value YAML cannot read "
                         f"({short(str(exc).splitlines()[0])}); fix the file")
    except RecursionError:
        raise UsageError(f"{what} {path} is nested too deeply to read; "
                         f"write it as a flat mapping of keys to values")


# [[H:]M:]S with optional days (D-H[:M[:S]]), as PBS and Slurm write durations
_DURATION = re.compile(r"(?:(\d+)-)?(\d+(?:\.\d*)?)(?::(\d+(?:\.\d*)?))?(?::(\d+(?:\.\d*)?))?")


def parse_duration(text: str, bare_unit_s: float = 1.0, days: bool = False) -> float:
    """Seconds from ``S``, ``M:S``, ``H:M:S`` (and ``D-H[:M[:S]]`` where ``days``).

    ``bare_unit_s``: what a lone number counts (1 for PBS and --time-limit, 60 for Slurm's
    minutes). Raises ValueError naming the accepted forms."""
    match = _DURATION.fullmatch(str(text).strip())
    if not match or (match.group(1) is not None and not days):
        forms = "seconds, M:S or H:M:S" + (" or D-H:M:S" if days else "")
        raise ValueError(f"{short(text)} is not a duration ({forms})")
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


# what a user who knows the old ``--compile true`` form might put after a switch
_BOOLEAN_WORDS = frozenset(("true", "false", "yes", "no", "on", "off"))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's real default, printed once: not where the help already says it
    (``(default`` or ``unset`` in its text), nor for a default of None (the help says what
    leaving it out does); a switch's as on or off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or "(default" in text or "unset" in text
                or not action.option_strings):
            return text
        if isinstance(action, argparse.BooleanOptionalAction):
            return f"{text} (default: {'on' if action.default else 'off'})"
        return super()._get_help_string(action)


class UsageParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like every other bad input; every
    command has ``--version`` and the one help format (``HelpFormatter``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        from . import __version__

        self.add_argument("--version", action="version", version=f"mnist_hpc {__version__}",
                          help="print mnist_hpc's version and exit")

    def error(self, message: str) -> None:
        if len(message) > 200:  # argparse quotes the offending value whole
            message = message[:200] + "..."
        raise UsageError(f"{message} (see {self.prog} --help)")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._refuse_switch_values(list(sys.argv[1:] if args is None else args))
        return super().parse_known_args(args, namespace)

    def _refuse_switch_values(self, args: list[str]) -> None:
        """Switches take no value: ``--compile true`` (the old form) is named with its fix,
        not left to argparse's "unrecognized arguments: true"."""
        switches = {option: action for action in self._actions
                    if isinstance(action, argparse.BooleanOptionalAction)
                    for option in action.option_strings}
        for flag, following in zip(args, args[1:] + [""]):
            option, equals, value = flag.partition("=")
            if option in switches and (equals or following.lower() in _BOOLEAN_WORDS):
                on, off = switches[option].option_strings[:2]
                raise UsageError(f"{option} takes no value (got {short(value or following)}); "
                                 f"use {on} or {off}")
