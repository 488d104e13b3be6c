"""The all-reduce benchmark: latency and bandwidth over message sizes, and what one training
step's gradient all-reduce costs for each model.

Bandwidths follow nccl-tests (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md): algorithm
bandwidth ``algbw = bytes / time``; bus bandwidth ``busbw = algbw * 2(n-1)/n`` for all-reduce,
the rate each link must carry in a ring, comparable across rank counts and with the
hardware's peak. GB/s are 1e9 bytes per second, as there.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as tdist

from ..job import process_group
from ..job.layout import DistEnv
from ..step import engine
from ..step.models import MODELS, build_model, count_parameters

SMALLEST = 8  # bytes: two fp32 values
#: per size, iterations ~ ITERATION_BYTES / size, within [MIN_ITERATIONS, MAX_ITERATIONS]:
#: small messages need many samples for a stable median, large ones take long each
ITERATION_BYTES = 64 * 2**20
MIN_ITERATIONS, MAX_ITERATIONS = 3, 20


@dataclass(frozen=True)
class Plan:
    sizes: list[int]  # the sweep, in bytes
    gradients: dict[str, int]  # model name -> fp32 gradient bytes (its parameter count x 4)
    warmup: int
    max_iterations: int


def sizes_up_to(max_bytes: int) -> list[int]:
    """8 bytes, then x4 (32, 128, ..., 32 MiB), and max_bytes itself at the end."""
    sizes, size = [], SMALLEST
    while size <= max_bytes:
        sizes.append(size)
        size *= 4
    if max_bytes > sizes[-1]:
        sizes.append(max_bytes)
    return sizes


def gradient_bytes() -> dict[str, int]:
    """Every model's gradient as DDP all-reduces it: fp32, one value per parameter. Built on
    the CPU (about 0.2 s for all four; on the meta device the ViT alone took 10 s here)."""
    return {name: count_parameters(build_model(name)) * 4 for name in MODELS}


def make_plan(max_bytes: int, quick: bool) -> Plan:
    return Plan(sizes_up_to(max_bytes), gradient_bytes(), warmup=1 if quick else 2,
                max_iterations=MAX_ITERATIONS // 4 if quick else MAX_ITERATIONS)


def iterations(nbytes: int, plan: Plan) -> int:
    return max(MIN_ITERATIONS, min(plan.max_iterations, ITERATION_BYTES // nbytes))


def bus_factor(ranks: int) -> float:
    return 2 * (ranks - 1) / ranks


def _median_s(nbytes: int, count: int, plan: Plan, device: torch.device,
              group: Optional[Any]) -> float:
    """This rank's median time of ``count`` all-reduces of ``nbytes``, after warm-up (the
    first calls at a size connect and allocate)."""
    tensor = torch.ones(max(1, nbytes // 4), dtype=torch.float32, device=device)
    times = []
    for step in range(plan.warmup + count):
        engine.synchronize(device)
        started = time.perf_counter()
        tdist.all_reduce(tensor, group=group)
        engine.synchronize(device)
        if step >= plan.warmup:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def _row(nbytes: int, seconds: float, ranks: int, count: int) -> dict:
    algbw = nbytes / seconds / 1e9
    return {"bytes": nbytes, "iterations": count, "latency_us": seconds * 1e6,
            "algbw_gbs": algbw, "busbw_gbs": algbw * bus_factor(ranks)}


def run(env: DistEnv, plan: Plan, backend: str, device: torch.device) -> dict:
    """Every rank times every size; the slowest rank's median is the size's time (the
    all-reduce is done only when the last rank is). ``backend`` differs from the session's
    gloo when the job's is NCCL: then a group of that backend carries the benchmark."""
    group = tdist.new_group(backend=backend) if backend != "gloo" else None
    gradient_sizes = sorted(set(plan.gradients.values()))
    counts = {n: iterations(n, plan) for n in plan.sizes + gradient_sizes}
    mine = {n: _median_s(n, count, plan, device, group) for n, count in counts.items()}
    gathered = process_group.all_gather_objects(mine, env)
    slowest = {n: max(per_rank[n] for per_rank in gathered) for n in counts}
    rows = [_row(n, slowest[n], env.world_size, counts[n]) for n in plan.sizes]
    gradients = [{"model": name, "parameters": nbytes // 4, "bytes": nbytes,
                  "allreduce_ms": slowest[nbytes] * 1e3}
                 for name, nbytes in plan.gradients.items()]
    return {"backend": backend, "ranks": env.world_size, "device": str(device),
            "warmup": plan.warmup, "sizes": rows, "gradients": gradients,
            "summary": summary(rows, env.world_size, backend)}


def summary(rows: list[dict], ranks: int, backend: str) -> dict:
    """Two figures for a performance model: the smallest message's time (all latency) and the
    largest message's bus bandwidth (all bandwidth). ``hop_latency_us`` splits the latency
    over a ring's 2(n-1) steps, the per-hop form ``scaling model`` takes."""
    small, large = rows[0], rows[-1]
    return {"backend": backend, "ranks": ranks,
            "latency_us": small["latency_us"], "latency_bytes": small["bytes"],
            "hop_latency_us": small["latency_us"] / (2 * (ranks - 1)),
            "bus_bandwidth_gbs": large["busbw_gbs"], "bandwidth_bytes": large["bytes"]}
