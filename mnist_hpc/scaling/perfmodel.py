"""The performance model: per-step time = compute + a ring all-reduce of the fp32 gradients,
to show where scaling must flatten for a given network (see mnist_hpc/sweeps/README.md).
``python -m mnist_hpc.scaling model`` prints it alone."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Iterable

from ..errors import EXIT_OK, UsageError
from .sweep import int_list
from .tables import batch_text, fmt, md_table

DEFAULT_NETWORK = "25,10"  # Slingshot-class: 25 GB/s per link, 10 µs per hop
GRADIENT_BYTES_PER_PARAM = 4  # DDP all-reduces fp32 gradients (bf16 autocast keeps fp32 params)


def allreduce_s(ranks: int, nbytes: float, bandwidth_gbs: float, latency_us: float) -> float:
    """Ring all-reduce: 2(n-1)/n of the bytes cross each link, in 2(n-1) latency-bound steps."""
    if ranks <= 1:
        return 0.0
    return (2 * (ranks - 1) / ranks * nbytes / (bandwidth_gbs * 1e9)
            + 2 * (ranks - 1) * latency_us * 1e-6)


def predict(ranks_list: Iterable[int], mode: str, batch: int, compute_s_per_sample: float,
            nbytes: float, bandwidth_gbs: float, latency_us: float,
            base_ranks: int) -> list[dict]:
    """Step time = per-rank compute (proportional to the per-rank batch) + ring all-reduce,
    with no overlap of the two (an upper bound on the step: DDP overlaps some of it).

    ``batch`` is the global batch (strong) or the per-rank batch (weak); speedup and
    efficiency are against the model's own ``base_ranks`` point."""

    def point(n: int) -> dict:
        per_rank = batch / n if mode == "strong" else float(batch)
        global_batch = batch if mode == "strong" else batch * n
        compute = compute_s_per_sample * per_rank
        comm = allreduce_s(n, nbytes, bandwidth_gbs, latency_us)
        return {"ranks": n, "per_rank_batch": per_rank, "compute_ms": 1000 * compute,
                "allreduce_ms": 1000 * comm, "step_ms": 1000 * (compute + comm),
                "samples_per_s": global_batch / (compute + comm)}

    base = point(base_ranks)["samples_per_s"]
    out = []
    for n in sorted(set(ranks_list)):
        p = point(n)
        p["speedup"] = p["samples_per_s"] / base
        p["efficiency"] = p["speedup"] / (n / base_ranks)
        out.append(p)
    return out


def parse_network(text: str, option: str) -> tuple[float, float]:
    """GB_PER_S,LATENCY_US as given to ``option`` (named in the error)."""
    try:
        bandwidth, latency = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text!r}: give GB_PER_S,LATENCY_US, e.g. 25,10 "
                         f"(Slingshot) or 1.25,50 (10 GbE)")
    if not (bandwidth > 0 and 0 <= latency < math.inf and bandwidth < math.inf):
        raise UsageError(f"{option} {text!r}: bandwidth must be > 0 and latency >= 0")
    return bandwidth, latency


def network_from_doctor(path: str) -> tuple[float, float]:
    """GB_PER_S,LATENCY_US as the doctor measured them on the allocation (doctor.json's
    ``allreduce``: the largest message's bus bandwidth, the smallest's per-hop latency)."""
    try:
        measured = json.loads(Path(path).read_text()).get("allreduce")
    except (OSError, ValueError, AttributeError) as exc:
        raise UsageError(f"--from {path}: cannot read a doctor.json ({exc}); give the file "
                         f"python -m mnist_hpc.doctor --out wrote")
    if not isinstance(measured, dict):
        raise UsageError(f"--from {path}: no all-reduce measurement in it (a one-process "
                         f"doctor run measures none); run the doctor with 2 or more ranks")
    text = f"{measured.get('bus_bandwidth_gbs')},{measured.get('hop_latency_us')}"
    return parse_network(text, f"--from {path}")


def model_ranks(measured: list[int]) -> list[int]:
    """The measured points, then doublings up to 1024 ranks, to show where scaling flattens."""
    top = max(measured)
    extra, n = [], 1
    while n <= 1024:
        if n > top:
            extra.append(n)
        n *= 2
    return sorted(set(measured) | set(extra))


def model_markdown(rows: list[dict], bandwidth: float, latency: float, nbytes: float) -> str:
    header = ["ranks", "per-rank batch", "compute ms", "all-reduce ms", "step ms",
              "samples/s", "speedup", "efficiency"]
    body = [[str(p["ranks"]), batch_text(p["per_rank_batch"]), fmt(p["compute_ms"], 3),
             fmt(p["allreduce_ms"], 3), fmt(p["step_ms"], 3), fmt(p["samples_per_s"], 0),
             f"{p['speedup']:.2f}", f"{p['efficiency']:.2f}"] for p in rows]
    return (f"Network: {bandwidth:g} GB/s per link, {latency:g} µs per hop; gradients "
            f"{nbytes / 1e6:.2f} MB per step.\n\n" + md_table(header, body))


def cmd_model(args: argparse.Namespace) -> int:
    if args.from_doctor and args.network:
        raise UsageError("give --network or --from, not both")
    if args.from_doctor:
        bandwidth, latency = network_from_doctor(args.from_doctor)
    else:
        bandwidth, latency = parse_network(args.network or DEFAULT_NETWORK, "--network")
    try:
        numbers = [int(x) for x in args.ranks.split(",")]
    except ValueError:
        raise UsageError(f"--ranks {args.ranks!r} must be rank counts separated by commas, "
                         f"e.g. 1,2,4")
    ranks = int_list(numbers, "--ranks")
    nbytes = args.params * GRADIENT_BYTES_PER_PARAM
    per_sample = args.compute_ms / 1000 / args.batch  # compute_ms: one rank, --batch samples
    rows = predict(ranks, args.mode, args.batch, per_sample, nbytes, bandwidth, latency,
                   ranks[0])
    print(f"{args.mode} scaling, {args.compute_ms:g} ms compute for {args.batch} samples on "
          f"one rank. " + model_markdown(rows, bandwidth, latency, nbytes))
    return EXIT_OK
