"""Faults for the reliability tests: a trainer that fails on one rank, and a lost node.

As a script, ``python tests/fault_injection.py [trainer args]`` (under any launcher) runs the
real trainer with one change: on rank ``FAULT_RANK`` (default 1), just before optimizer step
``FAULT_STEP`` (default 2, counted from 0) of the first epoch it trains, the batch iterator
raises ``FAULT_ERROR``: ``oom`` (the ``torch.OutOfMemoryError`` a CUDA allocation gives, the
default) or ``runtime`` (a plain ``RuntimeError``). Every other rank is untouched.

As a module it offers the process-tree helpers that a "lost node" test needs without psutil:
the descendants of a process read from /proc, and a check that none of them survived.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

MESSAGES = {
    "oom": "CUDA out of memory. Tried to allocate 20.00 GiB (injected by tests/fault_injection.py)",
    "runtime": "injected failure (tests/fault_injection.py)",
}


def _install_fault() -> None:
    import torch
    import torch.distributed

    from mnist_hpc import engine

    kind = os.environ.get("FAULT_ERROR", "oom")
    fault_rank = int(os.environ.get("FAULT_RANK", "1"))
    fault_step = int(os.environ.get("FAULT_STEP", "2"))
    error = torch.OutOfMemoryError if kind == "oom" else RuntimeError
    original = engine.train_one_epoch

    def train_one_epoch(model, batches, *args, **kwargs):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

        def failing():
            for step, batch in enumerate(batches):
                if rank == fault_rank and step == fault_step:
                    raise error(MESSAGES[kind])
                yield batch

        return original(model, failing(), *args, **kwargs)

    # train.py calls engine.train_one_epoch through the module, so this is what it runs
    engine.train_one_epoch = train_one_epoch


# --- process trees, read from /proc ---------------------------------------------------------

def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces
    return fields[0], int(fields[1])


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[1], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Still running: present and not a zombie waiting to be reaped."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def kill_all_at_once(pids: list[int]) -> None:
    """SIGKILL every process in one sweep, as a node that loses power takes them all."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    """The processes among ``pids`` still alive after ``timeout`` seconds (ideally none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        survivors = [pid for pid in pids if alive(pid)]
        if not survivors:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


if __name__ == "__main__":
    _install_fault()
    from mnist_hpc import train

    sys.exit(train.main())
