"""Hang and failure reports: every live rank's Python stack, what the job was doing when a
collective failed, and which ranks never answered.

- ``kill -USR2 <pid>`` makes a rank append its stack (every thread) to
  ``<run>/ranks/rank-N.txt`` at any time, without stopping it (``faulthandler``, which writes
  from the signal handler itself, so it answers even while the rank waits in C++).
- When a collective times out or a peer vanishes, each rank still alive appends its stack to
  the same file, checks in with the process group's store and waits a few seconds for the
  others; the error line then says what the job was doing (``Activity``) and which ranks
  never checked in (stopped, hung or dead). A store that does not answer (its host is the
  stopped rank) leaves the missing ranks unknown, which the line says too.
"""

from __future__ import annotations

import faulthandler
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

import torch.distributed as dist

from ..errors import ranks_text
from ..job.layout import DistEnv
from .ranklog import RANKS_DIR

STACK_SIGNAL = signal.SIGUSR2
STORE_PREFIX = "mnist_hpc/failed/"
# how long a failing rank waits for its peers to check in: their collectives fail within a
# second or two of each other, whether by the same timeout or by the same closed socket
CHECK_IN_S = 5.0


class Activity:
    """Where this rank is and which collective it is in: "all-reduce of gradients, epoch 2,
    step 17". Set at each step and phase; read only when something failed."""

    def __init__(self) -> None:
        self.collective, self.epoch, self.step = "set-up", None, None

    def set(self, collective: str, epoch: Optional[int] = None,
            step: Optional[int] = None) -> None:
        self.collective, self.epoch, self.step = collective, epoch, step

    def where(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in
                         (("epoch", self.epoch), ("step", self.step)) if value is not None)

    def __str__(self) -> str:
        return ", ".join(part for part in (self.collective, self.where()) if part)


def stack_path(run_dir: Path, rank: int) -> Path:
    return run_dir / RANKS_DIR / f"rank-{rank}.txt"


class StackDumps:
    """This rank's stack file, and SIGUSR2 routed to it for as long as the run lasts."""

    def __init__(self, run_dir: Path, rank: int) -> None:
        path = stack_path(run_dir, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file: TextIO = open(path, "a")
        faulthandler.register(STACK_SIGNAL, file=self.file, all_threads=True, chain=False)

    def dump(self, reason: str, exc: Optional[BaseException] = None) -> None:
        """Every thread's stack now; after a failure, first where the exception was raised
        (the frames it unwound, which the threads' stacks no longer show)."""
        self.file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}: {reason}\n")
        if exc is not None:
            self.file.write("".join(traceback.format_exception(type(exc), exc,
                                                               exc.__traceback__)))
        self.file.flush()
        faulthandler.dump_traceback(file=self.file, all_threads=True)

    def close(self) -> None:
        faulthandler.unregister(STACK_SIGNAL)
        self.file.close()


def is_communication_failure(exc: BaseException) -> bool:
    """A collective that timed out or lost its peer, as gloo and NCCL report it."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer",
                                  "Timed out waiting", "timed out", "Broken pipe"))


def _bounded(action: Callable[[], object], seconds: float) -> tuple[bool, object]:
    """Run ``action`` in a thread; (finished, result). A store whose host is stopped never
    answers, and its own timeout is the long one of the process group."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(action()), daemon=True)
    worker.start()
    worker.join(seconds)
    return bool(box), (box[0] if box else None)


def missing_ranks(env: DistEnv, what: str, wait_s: float = CHECK_IN_S) -> Optional[list[int]]:
    """Check in with the store and wait up to ``wait_s`` for every rank; the ranks that did
    not check in, or None when the store cannot be reached."""
    try:
        store = dist.distributed_c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None
    keys = [f"{STORE_PREFIX}{rank}" for rank in range(env.world_size)]
    finished, _ = _bounded(lambda: store.set(keys[env.rank], what), wait_s)
    if not finished:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        finished, present = _bounded(
            lambda: [rank for rank, key in enumerate(keys) if store.check([key])], wait_s)
        if not finished:
            return None
        if len(present) == env.world_size or time.monotonic() >= deadline:
            return [rank for rank in range(env.world_size) if rank not in present]
        time.sleep(0.2)


def _add_note(exc: BaseException, note: str) -> None:
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # add_note, before Python 3.11


def ranks_on_nodes(ranks: list[int], hostnames: Sequence[str]) -> str:
    """"ranks 2, 3 on node-b" (hosts in rank order), or "ranks 2, 3" where the ranks' hosts
    are unknown (a failure before they were gathered)."""
    if any(rank >= len(hostnames) for rank in ranks):
        return ranks_text(ranks)
    by_host: dict[str, list[int]] = {}
    for rank in ranks:
        by_host.setdefault(hostnames[rank], []).append(rank)
    return "; ".join(f"{ranks_text(group)} on {host}" for host, group in by_host.items())


def explain(exc: BaseException, env: DistEnv, activity: Activity, stacks: StackDumps,
            run_dir: Path, hostnames: Sequence[str] = ()) -> None:
    """Dump this rank's stack and add to ``exc`` (as a note, which ``errors.describe``
    prints) where training was and, for a failed collective, which one and which ranks are
    missing, and on which nodes (``hostnames``: every rank's, in rank order)."""
    doing = str(activity)
    stacks.dump(f"rank {env.rank} failed during {doing}: {type(exc).__name__}", exc)
    if not (env.distributed and is_communication_failure(exc)):
        # the collective is not what failed: say only where in training it happened
        if activity.where():
            _add_note(exc, f"at {activity.where()}")
        return
    note = f"during the {doing}"
    missing = missing_ranks(env, doing)
    if missing is None:
        note += "; which ranks are missing is unknown (the store did not answer)"
    elif missing:
        note += f"; no word from {ranks_on_nodes(missing, hostnames)} (stopped, hung or dead)"
    _add_note(exc, note + f"; stacks in {run_dir / RANKS_DIR}")
