"""What rank 0 prints and writes: the table of ranks, the findings with their fixes, the
benchmark, and doctor.json. Torch-free: everything here is already gathered."""

from __future__ import annotations

from typing import Optional

from .checks import CHECKS, FAIL, Finding, compact_ranges, node_ranks

SCHEMA = 1
VERSION_COLUMNS = ("python", "torch", "cuda", "nccl", "mnist_hpc")


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def device_cell(device: dict) -> str:
    if device["kind"] != "cuda":
        return device["kind"]
    identity = device["uuid"] or device["bus_id"] or "no id"
    return f"cuda:{device['index']} {device['name']} {identity}"


def ranks_table(facts: list[dict]) -> str:
    nodes = node_ranks([f["host"] for f in facts])
    header = ["rank", "local", "node", "host", "launcher", "device", "cpus", "threads",
              "versions (" + "/".join(VERSION_COLUMNS) + ")"]
    rows = [[str(f["rank"]), str(f["local_rank"]), str(node), f["host"], f["launcher"],
             device_cell(f["device"]), compact_ranges(f["cpus"]), str(f["threads"]),
             " / ".join(str(f["versions"][key] or "-") for key in VERSION_COLUMNS)]
            for f, node in zip(facts, nodes)]
    return text_table(header, rows)


def findings_text(findings: list[Finding]) -> str:
    if not findings:
        return f"All {len(CHECKS)} checks passed: " + "; ".join(CHECKS.values()) + "."
    lines = []
    for finding in findings:
        lines.append(f"{finding.level.upper()} {finding.check}: {finding.problem}")
        lines.append(f"  fix: {finding.fix}")
    passed = [name for name in CHECKS if name not in {f.check for f in findings}]
    if passed:
        lines.append(f"passed: {', '.join(passed)}")
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} B"


def benchmark_text(benchmark: dict) -> str:
    if "skipped" in benchmark:
        return f"All-reduce benchmark skipped: {benchmark['skipped']}."
    title = (f"All-reduce ({benchmark['backend']}, {benchmark['ranks']} ranks, "
             f"{benchmark['device']}); time: median per rank, slowest rank")
    rows = [[_size(r["bytes"]), str(r["iterations"]), f"{r['latency_us']:.1f}",
             f"{r['algbw_gbs']:.3f}", f"{r['busbw_gbs']:.3f}"] for r in benchmark["sizes"]]
    sizes = text_table(["size", "iters", "time us", "algbw GB/s", "busbw GB/s"], rows)
    grads = text_table(["model", "parameters", "gradient", "all-reduce ms"],
                       [[g["model"], f"{g['parameters']:,}", _size(g["bytes"]),
                         f"{g['allreduce_ms']:.2f}"] for g in benchmark["gradients"]])
    s = benchmark["summary"]
    note = f"\nNote: {benchmark['note']}" if benchmark.get("note") else ""
    return (f"{title}\n{sizes}\n\nOne step's gradient all-reduce (fp32, one message):\n"
            f"{grads}\n\nSummary: {s['latency_us']:.1f} us for {s['latency_bytes']} B "
            f"({s['hop_latency_us']:.1f} us per ring step), bus bandwidth "
            f"{s['bus_bandwidth_gbs']:.3f} GB/s at {_size(s['bandwidth_bytes'])}{note}")


def payload(facts: list[dict], findings: list[Finding], benchmark: dict, world: dict,
            elapsed_s: float) -> dict:
    """doctor.json. ``allreduce`` is the benchmark's summary (null on one process)."""
    nodes = node_ranks([f["host"] for f in facts])
    return {
        "schema": SCHEMA,
        "status": "failed" if any(f.level == FAIL for f in findings) else "ok",
        "world": world,
        "ranks": [{**fact, "node_rank": node, "cpus": compact_ranges(fact["cpus"])}
                  for fact, node in zip(facts, nodes)],
        "checks": {name: {"what": what,
                          "status": _status(name, findings)} for name, what in CHECKS.items()},
        "findings": [f.to_dict() for f in findings],
        "benchmark": benchmark,
        "allreduce": benchmark.get("summary"),
        "elapsed_s": elapsed_s,
    }


def _status(name: str, findings: list[Finding]) -> str:
    levels = {f.level for f in findings if f.check == name}
    level: Optional[str] = FAIL if FAIL in levels else next(iter(levels), None)
    return level or "ok"
