"""How long gradient all-reduces take under DDP: a communication hook that times each bucket.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class CommTimer:
    """Wall time during which at least one gradient all-reduce was in flight.

    Measured by a DDP communication hook from launch to completion of each bucket's
    all-reduce; overlapping buckets are counted once. It overlaps backward compute, so it is
    an upper bound on what communication costs the step, not a share of it. Exact on gloo,
    whose futures complete when the data has arrived; not used on NCCL, whose futures
    complete when the kernel is queued.
    """

    intervals: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # when the latest all-reduce was launched: the backward pass has produced every gradient
    # once the step's last bucket launches, so what the step waits after it is communication
    last_start: float = float("-inf")

    def take_seconds(self) -> float:
        """Union length of the intervals recorded since the last call, then forget them."""
        with self.lock:
            spans, self.intervals = sorted(self.intervals), []
        total, end = 0.0, float("-inf")
        for start, stop in spans:
            if stop > end:
                total += stop - max(start, end)
                end = stop
        return total


def timed_allreduce_hook(timer, bucket):
    """DDP's default all-reduce (average over ranks), timed. (Unannotated: DDP checks the
    annotations at run time and rejects the strings that postponed evaluation makes.)"""
    start = timer.last_start = time.perf_counter()
    tensor = bucket.buffer().div_(dist.get_world_size())
    future = dist.all_reduce(tensor, async_op=True).get_future()

    def done(fut: torch.futures.Future) -> torch.Tensor:
        with timer.lock:
            timer.intervals.append((start, time.perf_counter()))
        return fut.value()[0]

    return future.then(done)
