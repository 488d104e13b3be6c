"""glibc's allocator on the CPU path: whole trainer processes with the large-block thresholds
of this environment (envs/local.sh sets them) against the same processes with glibc's own.

glibc returns every freed block over its mmap threshold (at most 32 MB) to the kernel, so a
CPU step whose activations exceed it faults them back in page by page, every step. Raised
thresholds keep such blocks in the heap. Repeats alternate the two settings, so drifting
machine load hits them alike; CPU time is the kernel's account of each finished process.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
from typing import Callable

from ..errors import UsageError
from .command import run_train
from .settings import SEED, Settings

THRESHOLDS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(args: list[str], env: dict) -> tuple[float, float]:
    """(CPU s, wall s) of one trainer run with ``args``."""
    cpu = _children_cpu_s()
    wall_s = run_train(args, env)
    return _children_cpu_s() - cpu, wall_s


def compare(args: list[str], repeats: int, environ: dict) -> dict:
    """The trainer with ``args``, ``repeats`` times under each setting, alternating."""
    tuned = {name: environ[name] for name in THRESHOLDS if name in environ}
    if not tuned:
        raise UsageError("--only allocator compares the thresholds set in this environment "
                         "with glibc's; set MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ "
                         "(source envs/local.sh sets both)")
    settings = {"glibc": {k: v for k, v in environ.items() if k not in THRESHOLDS},
                "raised": dict(environ)}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, env in settings.items():
            runs[name].append(_timed(args, env))
    medians = {name: {"cpu_s": statistics.median(r[0] for r in rows),
                      "wall_s": statistics.median(r[1] for r in rows),
                      "cpu_s_all": [r[0] for r in rows]} for name, rows in runs.items()}
    return {"thresholds": tuned, "args": args, "repeats": repeats, **medians,
            "cpu_ratio": medians["raised"]["cpu_s"] / medians["glibc"]["cpu_s"],
            "wall_ratio": medians["raised"]["wall_s"] / medians["glibc"]["wall_s"]}


def bench_allocator(settings: Settings, log: Callable[[str], None]) -> dict:
    """The default recipe for one epoch on the CPU, as ``python -m mnist_hpc.train`` runs it."""
    with tempfile.TemporaryDirectory() as results:
        args = ["--device", "cpu", "--epochs", "1", "--limit", str(settings.limit or 4096),
                "--seed", str(SEED), "--no-plots", "--data-dir", settings.data_dir,
                "--results-dir", results]
        row = compare(args, settings.repeats, dict(os.environ))
    log(f"  CPU time {row['cpu_ratio']:.3f}x and wall time {row['wall_ratio']:.3f}x glibc's")
    return row
