"""Errors the trainer turns into exit codes, shared by every module.

Exit codes (documented in docs/reliability.md):
  0  success
  1  runtime failure (a rank raised, a peer vanished, a collective timed out)
  2  bad input: config, CLI, data, environment, results directory; the message says the fix
  75 stopped early with a checkpoint (preemption signal or --time-limit); resume to go on
"""

import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75  # sysexits EX_TEMPFAIL: "try again later", which is what a requeue does


class UsageError(Exception):
    """Bad input a user can fix. The message names the problem and the fix, on one line."""


class Preempted(Exception):
    """Training stopped at a step boundary on request; a checkpoint was written."""


def describe(exc: BaseException) -> str:
    """An exception as one line: its type, the first line of its message and its notes (what
    the job was doing when it failed, see ``hangs.explain``)."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    notes = "".join(f"; {note}" for note in getattr(exc, "__notes__", []))
    return f"{type(exc).__name__}: {first_line.rstrip('.')}{notes}"


def ranks_text(ranks: list[int]) -> str:
    """"rank 3" or "ranks 1, 3": the ranks an error names."""
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def run_command(action: Callable[[], object]) -> int:
    """A command line's body run: EXIT_OK, or its UsageError as one ``error:`` line on
    stderr and EXIT_USAGE (the torch-free commands: runs, grid)."""
    try:
        action()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    return EXIT_OK
