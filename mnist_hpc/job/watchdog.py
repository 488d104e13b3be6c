"""A job ends or fails loudly, never hangs: deadlines on the waits that have no timeout of
their own, and a failing rank that takes an MPI job down with it.

Torch-free. Two waits before training have no usable timeout: the MPI broadcast of the
rendezvous address and the c10d store connection inside ``init_process_group`` (a port held
by a process that accepts and never answers keeps a rank waiting for good, whatever the
process group's timeout). Both release the GIL while they wait, so a timer thread can end
the process.

Under MPICH's hydra a rank that *exits* non-zero does not end the job (MPI was finalized
after the rendezvous, so hydra sees a normal exit and waits for the others); a peer that is
stopped (SIGSTOP, a hung NFS read, a debugger) then keeps mpiexec waiting forever. A rank
that *dies by a signal* is a "bad termination": hydra kills every other rank with SIGKILL,
which also ends stopped ones (measured: the job ends about a second later). SIGKILL rather
than SIGABRT: it leaves no core file of a multi-GB process on a shared filesystem, and no
handler can turn it into something else. MPI_Abort is no option: MPI is finalized.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Mapping

from ..errors import EXIT_FAILURE
from .layout import MPI_LAUNCHERS, DistEnv, detect, rendezvous


def end_job_on_failure(launcher_name: str) -> None:
    """Under an MPI launcher, end this process by SIGKILL so that the launcher ends every
    rank; elsewhere return (torchrun, srun and a single process end the job on an exit code).
    Call it only after the rank's error line is printed, and only for runtime failures: the
    launcher prints "BAD TERMINATION ... EXIT CODE: 9" and exits 9."""
    if launcher_name not in MPI_LAUNCHERS:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def exit_now(code: int, launcher_name: str) -> None:
    """End the process at once, from any thread, taking an MPI job down with it."""
    end_job_on_failure(launcher_name)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGINT take their default action (end the process) inside the block.
    For waits before training: nothing has been trained, so there is nothing to save, and a
    Python handler (the trainer's preemption flag, KeyboardInterrupt) would only run once
    the wait returns, which it may never do. Outside the main thread: no change."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, signal.SIG_DFL)
                    for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: set outside Python, nothing to put back
                signal.signal(signum, handler)


@contextmanager
def deadline(seconds: float, message: str, launcher_name: str) -> Iterator[None]:
    """The block finishes within ``seconds``, or ``error: {message}`` is printed and the
    process ends with exit 1; SIGTERM and SIGINT end it meanwhile (``interruptible``)."""

    def expire() -> None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        exit_now(EXIT_FAILURE, launcher_name)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    with interruptible():
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


def find_job(environ: Mapping[str, str], timeout_s: float) -> DistEnv:
    """``launcher.detect`` and ``rendezvous``, the MPI broadcast of rank 0's address (the one
    wait there, only where the launcher gave no MASTER_ADDR/PORT) bounded by ``timeout_s``."""
    env = detect(environ)
    with deadline(timeout_s, f"rank {env.rank}: the MPI broadcast of rank 0's address did not "
                             f"complete within --timeout {timeout_s:g} s; check that every "
                             f"rank started, or export MASTER_ADDR and MASTER_PORT",
                  env.launcher):
        return rendezvous(env, environ)
