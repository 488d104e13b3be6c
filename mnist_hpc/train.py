"""The entry point: ``python -m mnist_hpc.train`` on one process or under any launcher.

Reads the config and finds this process's place in the job before torch loads, so that
``--help``, bad input and a broken launcher environment are answered without it (docs/running.md,
"Options"); then trains (``mnist_hpc.run.loop``) and turns the outcome into the exit code
(``mnist_hpc.errors``) and at most one line per rank.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import NoReturn, Optional

from .config.flags import parse_command_line
from .config.options import RunConfig
from .config.resolve import record_yaml
from .errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USAGE,
    Preempted,
    UsageError,
    describe,
)
from .job import layout, watchdog
from .job.preemption import (
    StopRequest,
    install_signal_handlers,
    restore_signal_handlers,
)
from .observe import ranklog, startup  # startup: its fallback clock starts at import


def _hard_exit_after(seconds: float, code: int, launcher_name: str) -> threading.Timer:
    """If teardown hangs (a dead peer, a stuck NCCL communicator), exit anyway: a failed
    rank must end the job, not idle until walltime (pytorch/pytorch#97191)."""
    timer = threading.Timer(seconds, lambda: watchdog.exit_now(code, launcher_name))
    timer.daemon = True
    timer.start()
    return timer


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, Preempted):
        return EXIT_PREEMPTED
    return EXIT_FAILURE


def _print_error(message: str, rank: int = 0) -> None:
    print(f"{ranklog.tag(rank)}error: {message}", file=sys.stderr, flush=True)


def _print_config(config: RunConfig) -> int:
    """``--print-config``: the config resolved as a run started here would resolve it (torch
    loads to see the devices), as YAML on rank 0; nothing is trained or written."""
    job = layout.detect(os.environ)
    from .run import record  # torch

    resolved = record.preview(config, job)
    if job.is_main:
        print(record_yaml(resolved, job.world_size), end="", flush=True)
    return EXIT_OK


def main(argv: Optional[list[str]] = None, keep_signal_handlers: bool = False) -> int:
    """Train; return the exit code. ``keep_signal_handlers``: the process ends right after,
    so a launcher's SIGTERM to the slower ranks (srun --kill-on-bad-exit, once the first
    rank has exited 75) must not kill them during teardown and turn 75 into 143."""
    rank = layout.detect_leniently(os.environ).rank
    try:
        config, print_config = parse_command_line(argv)
        if print_config:
            return _print_config(config)
    except UsageError as exc:
        if rank == 0:
            _print_error(str(exc))
        return EXIT_USAGE
    stop = StopRequest(time_limit=config.time_limit)
    previous_handlers = install_signal_handlers(stop)
    joined, hard_exit = False, None
    try:
        job = watchdog.find_job(os.environ, config.timeout)
        rank = job.rank
        # MPICH's MPI_Finalize (the MPI rendezvous runs it) leaves a SIGUSR1 handler of its
        # own that swallows the signal: take the preemption signals back
        install_signal_handlers(stop)
        if config.deterministic:  # read by cuBLAS when CUDA starts: before torch loads
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        from .job import process_group
        from .run import loop  # torch loads here, once the config and the job are good
        with process_group.session(config.device, config.backend, config.timeout, job=job) as env:
            joined = True
            try:
                return loop.train(config, env, stop)
            except BaseException as exc:
                # armed before the process group's teardown, which can hang on a dead peer
                hard_exit = _hard_exit_after(60, exit_code(exc), job.launcher)
                raise
    except UsageError as exc:
        if rank == 0:
            _print_error(str(exc))
        return EXIT_USAGE
    except Preempted:
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"{ranklog.tag(rank)}rank {rank}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # the one place every runtime failure is named, per rank
        if not joined:  # init_process_group gave up: usually a rank that never started
            _print_error(f"rank {rank} failed to start the process group: {describe(exc)}; "
                         f"check that every rank started and can reach rank 0 (MASTER_ADDR, "
                         f"MASTER_PORT), or raise --timeout", rank)
        else:
            _print_error(f"rank {rank} failed: {describe(exc)}", rank)
        return EXIT_FAILURE
    finally:
        # teardown is over: a caller that goes on (tests call main() in-process) keeps
        # neither the hard exit nor our signal handlers
        if hard_exit is not None:
            hard_exit.cancel()
        ranklog.stop_copying()
        if not keep_signal_handlers:
            restore_signal_handlers(previous_handlers)


def main_exit() -> None:
    """Console-script and ``python -m`` entry point.

    Ends with ``os._exit`` once the output is flushed (every result file was already written
    and fsynced): the interpreter's own shutdown runs the C++ destructors of c10d's stores and
    threads, which at times abort ("terminate called without an active exception", seen on a
    rank whose training had completed) and turn a finished run into a failed job; with torch
    loaded it also costs 0.3-1 s of CPU. Every exit but a failure's takes this way."""
    startup.hold_collection()
    leave(main(keep_signal_handlers=True))


def leave(code: int) -> NoReturn:
    """End the process as the console script does, with ``code`` from ``main``."""
    if code == EXIT_FAILURE:
        # its line is printed: under mpiexec a rank that merely exits leaves a stopped peer
        # (and so the job) waiting for ever; dying by a signal makes hydra end every rank
        watchdog.end_job_on_failure(layout.detect_leniently(os.environ).launcher)
    if code == EXIT_FAILURE:
        # a failing rank exits normally: the slower shutdown lets every rank print its one
        # line before the launcher ends the job on the first non-zero exit. A preempted run's
        # ranks left together (a barrier after the checkpoint); a usage error is rank 0's line.
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_exit()
