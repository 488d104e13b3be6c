"""Where each rank's training time goes, epoch by epoch, and the ranks' summary rank 0 records.

A ``StepClock`` splits this rank's training time into data wait (inside the batch iterator),
communication wait and compute (the rest of the step: forward, backward, optimizer). It needs
no change to the training step: it wraps the batch iterator, the collectives the loop calls
(``comm``) and hooks the optimizer. On CPU the clock is read directly; on CUDA each step's
compute is timed with a pair of CUDA events read once, at the epoch's end, so the device is
never synchronised inside the epoch.

Communication wait is what the step waits after its last gradient bucket was launched (the
backward pass has produced every gradient by then) until the optimizer may step, plus the
collectives the loop calls (the stop check, the step log). It is measured only where DDP's
all-reduce is timed (gloo, ``comm_timer.CommTimer``); on NCCL it is ``None`` and the wait is part
of compute (use ``--profile`` to see it).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch

from .comm_timer import CommTimer

QUANTITIES = ("data_s", "compute_s", "comm_s", "eval_s")
T = TypeVar("T")


def peak_memory_bytes(device: torch.device) -> int:
    """The most memory this rank held: CUDA's allocator peak since the last reset, or on CPU
    the process's peak resident set (host memory is the CPU's device memory)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts KiB


class StepClock:
    """This rank's data wait, compute and communication wait over one epoch's steps."""

    def __init__(self, device: torch.device, comm_timer: Optional[CommTimer],
                 optimizer: torch.optim.Optimizer) -> None:
        self.device, self.comm_timer = device, comm_timer
        self.cuda = device.type == "cuda"
        optimizer.register_step_pre_hook(self._before_optimizer)
        self.reset()

    def reset(self) -> None:
        """Start a new epoch's account (and, on CUDA, its memory peak)."""
        self.data_s = self.compute_s = self.comm_s = 0.0
        self.step_started: Optional[float] = None
        self.step_comm = 0.0
        self.events: list = []
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def batches(self, batches: Iterable[T]) -> Iterator[T]:
        """``batches``, timing the wait for each one; a step lasts from one batch to the
        request for the next (or to ``finish``)."""
        source = iter(batches)
        while True:
            asked = time.perf_counter()
            self._end_step(asked)
            try:
                batch = next(source)
            except StopIteration:
                return
            self.step_started = time.perf_counter()
            self.data_s += self.step_started - asked
            if self.cuda:
                self.events.append(torch.cuda.Event(enable_timing=True))
                self.events[-1].record()
            yield batch

    def comm(self, collective: Callable[..., T]) -> Callable[..., T]:
        """``collective``, its duration counted as this step's communication wait."""

        def timed(*args, **kwargs) -> T:
            started = time.perf_counter()
            try:
                return collective(*args, **kwargs)
            finally:
                self.step_comm += time.perf_counter() - started

        return timed

    def _before_optimizer(self, optimizer, args, kwargs) -> None:
        launched = self.comm_timer.last_start if self.comm_timer is not None else None
        if launched is not None and self.step_started is not None and launched >= self.step_started:
            self.step_comm += time.perf_counter() - launched

    def _end_step(self, now: float) -> None:
        if self.step_started is None:
            return
        if self.cuda:
            self.events.append(torch.cuda.Event(enable_timing=True))
            self.events[-1].record()
        else:
            self.compute_s += now - self.step_started - self.step_comm
        self.comm_s += self.step_comm
        self.step_started, self.step_comm = None, 0.0

    def finish(self) -> dict:
        """Close the last step (call once the device has caught up); this rank's figures."""
        self._end_step(time.perf_counter())
        if self.cuda:
            torch.cuda.synchronize(self.device)
            gpu_s = sum(start.elapsed_time(end) for start, end
                        in zip(self.events[::2], self.events[1::2])) / 1000
            # host-side communication wait overlaps the events' span
            self.compute_s = max(gpu_s - self.comm_s, 0.0)
        return {"data_s": self.data_s, "compute_s": self.compute_s,
                "comm_s": self.comm_s if self.comm_timer is not None else None,
                "peak_memory_bytes": peak_memory_bytes(self.device)}


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "std": statistics.pstdev(values)}


def summarize(per_rank: list[dict], threshold: float) -> dict:
    """The ``ranks`` block of an epoch record from every rank's figures (rank order), each a
    ``StepClock.finish`` dict plus ``eval_s`` and ``host``. A straggler's compute time is over
    ``threshold`` times the median."""
    summary: dict = {}
    for name in QUANTITIES:
        values = [r[name] for r in per_rank if r[name] is not None]
        summary[name] = _spread(values) if len(values) == len(per_rank) else None
    compute = [r["compute_s"] for r in per_rank]
    median = statistics.median(compute)
    slowest = max(range(len(compute)), key=compute.__getitem__)
    ratio = compute[slowest] / median if median > 0 else 1.0
    summary["slowest"] = {"rank": slowest, "host": per_rank[slowest]["host"],
                          "compute_s": compute[slowest], "compute_over_median": ratio}
    summary["stragglers"] = [{"rank": rank, "host": per_rank[rank]["host"],
                              "compute_over_median": compute[rank] / median}
                             for rank in range(len(compute))
                             if median > 0 and compute[rank] > threshold * median]
    summary["straggler_threshold"] = threshold
    summary["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in per_rank)
    return summary


def ranks_text(summary: dict, world_size: int) -> str:
    """The ranks' part of the epoch line: stragglers by rank and host, the memory peak."""
    stragglers = summary["stragglers"]
    parts = [] if world_size == 1 else [f"straggler{'s' if len(stragglers) > 1 else ''}: "
             + ", ".join(f"rank {s['rank']} ({s['host']}) compute "
                         f"{s['compute_over_median']:.2f}x median" for s in stragglers)
             if stragglers else
             f"slowest rank {summary['slowest']['rank']} compute "
             f"{summary['slowest']['compute_over_median']:.2f}x median"]
    comm = summary["comm_s"]
    if comm is not None:
        parts.append(f"comm wait {comm['median']:.2f} s median")
    parts.append(f"peak memory {summary['peak_memory_bytes'] / 2**20:,.0f} MiB")
    return "; ".join(parts)
