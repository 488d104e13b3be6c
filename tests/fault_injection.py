"""Faults for the failure tests: a trainer that fails on one rank, and a lost node.

As a script, ``python tests/fault_injection.py [trainer args]`` (under any launcher) runs the
real trainer with one change: on rank ``FAULT_RANK`` (default 1), once it has taken
``FAULT_STEP`` optimizer steps (default 2) of the first epoch it trains, it fails as ``FAULT``
says. Every other rank is untouched.

  oom      raises the ``torch.OutOfMemoryError`` a CUDA allocation gives (the default)
  runtime  raises a plain ``RuntimeError``
  kill     dies by a real SIGKILL: the kernel ends the process, no Python cleanup runs, its
           sockets close (it says so on stderr first, with its pid)
  stop     stops itself with SIGSTOP, as a hung node or a debugger would: alive, sockets
           open, never answering (it says so on stderr first, with its pid)
  slow     from that step on, sleeps ``FAULT_SLEEP`` seconds (default 0.2) inside each step's
           loss computation: a straggler whose compute is slow, training on correctly
  preempt  sends itself SIGUSR1, the scheduler's warning before a preemption, and trains on:
           with --stop-check-every 1 every rank stops after that step, checkpointed
  late     (rank 0, whatever FAULT_RANK says: it writes the records) trains as usual, then
           sleeps ``FAULT_SLEEP`` seconds before it writes the completed metrics.json, the run's
           last record: a slow file system

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


def _kill_self(rank: int, step: int) -> None:
    print(f"tests/fault_injection.py: rank {rank} (pid {os.getpid()}) sends itself SIGKILL at "
          f"step {step}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def _stop_self(rank: int, step: int) -> None:
    print(f"tests/fault_injection.py: rank {rank} (pid {os.getpid()}) sends itself SIGSTOP at "
          f"step {step}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)


def _slowed(loss_fn, from_step: int, seconds: float):
    """``loss_fn``, sleeping ``seconds`` in each call from call ``from_step`` (0-based) on."""
    calls = 0

    def slow(outputs, labels):
        nonlocal calls
        if calls >= from_step:
            time.sleep(seconds)
        calls += 1
        return loss_fn(outputs, labels)

    return slow


def _install_fault() -> None:
    import torch
    import torch.distributed

    from mnist_hpc.step import engine

    kind = os.environ.get("FAULT", "oom")
    errors = {"oom": torch.OutOfMemoryError, "runtime": RuntimeError}
    if kind not in ("kill", "stop", "slow", "preempt", "late") and kind not in errors:
        raise SystemExit(f"FAULT={kind!r}: expected kill, stop, slow, preempt, late, oom or "
                         f"runtime")
    fault_rank = int(os.environ.get("FAULT_RANK", "1"))
    fault_step = int(os.environ.get("FAULT_STEP", "2"))
    sleep = float(os.environ.get("FAULT_SLEEP", "0.2"))
    if kind == "late":
        from mnist_hpc.run import metrics_json

        write = metrics_json.write

        def late_write(run_dir, metrics, status, *args):  # only the main rank writes
            if status == metrics_json.COMPLETED:
                time.sleep(sleep)
            return write(run_dir, metrics, status, *args)

        metrics_json.write = late_write
        return
    original = engine.train_one_epoch

    def train_one_epoch(model, batches, optimizer, loss_fn, *args, **kwargs):
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        if kind == "slow":
            if rank == fault_rank:
                loss_fn = _slowed(loss_fn, fault_step, sleep)
            return original(model, batches, optimizer, loss_fn, *args, **kwargs)

        def failing():
            for step, batch in enumerate(batches):
                if rank == fault_rank and step == fault_step:
                    if kind == "preempt":
                        os.kill(os.getpid(), signal.SIGUSR1)
                        yield batch
                        continue
                    if kind == "kill":
                        _kill_self(rank, step)
                    if kind == "stop":
                        _stop_self(rank, step)
                    raise errors[kind](MESSAGES[kind])
                yield batch

        return original(model, failing(), optimizer, loss_fn, *args, **kwargs)

    # the trainer calls engine.train_one_epoch through the module, so this is what it runs
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
    from mnist_hpc.errors import EXIT_FAILURE
    from mnist_hpc.observe import startup

    startup.hold_collection()  # as the console script does

    if os.environ.get("FAULT") == "stop":
        # the console script's exit: under mpiexec a failing rank ends the job by a signal,
        # the only way hydra stops waiting for a stopped peer (mnist_hpc.job.watchdog)
        train.main_exit()
    # the other faults' failures return normally, so that every rank's error line is printed
    # before the launcher ends the job; a run they let finish or preempt leaves as the console
    # script does (train.leave)
    code = train.main()
    if code != EXIT_FAILURE:
        train.leave(code)
    sys.exit(code)
