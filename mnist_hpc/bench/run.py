"""One bench run: the measurements ``--only`` selects, on the device asked for, into one
report (its JSON and table: ``report``). Torch loads here, once the command line is good."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, Optional

import torch

from ..data import dataset
from ..errors import UsageError
from ..job import process_group
from ..job.layout import DistEnv
from .accuracy import bench_time_to_accuracy
from .allocator import bench_allocator
from .epochs import bench_epochs
from .machine import machine_info
from .names import CUDA_CASES, GROUPS, THROUGHPUT_CASES, TTA_PRESETS
from .overhead import bench_overhead
from .race import bench_race
from .report import summary
from .settings import settings_from
from .throughput import CASES, bench_throughput


def _selected(only: Optional[str], device: torch.device, quick: bool) -> list[str]:
    known = set(CASES) | {"epochs", "overhead", "race", "allocator"} | set(GROUPS["tta"])
    if only is None:
        names = list(THROUGHPUT_CASES) + (list(CUDA_CASES) if device.type == "cuda" else [])
        if quick:  # no compile (minutes) and no batch larger than the tiny subsets
            names = [n for n in names if not CASES[n].compile and n not in CUDA_CASES]
        return names + ["epochs"] + list(GROUPS["tta"]) + ["race"]
    names: list[str] = []
    for item in (part.strip() for part in only.split(",") if part.strip()):
        if item in GROUPS:
            group = [n for n in GROUPS[item]
                     if n not in CUDA_CASES or device.type == "cuda"]
            names += [n for n in group if n not in names]
        elif item in known:
            if item not in names:
                names.append(item)
        else:
            raise UsageError(f"--only: unknown name {item!r}; choose from "
                             f"{', '.join(list(GROUPS) + sorted(known))}")
    return names


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    device = process_group.pick_device(args.device, DistEnv())  # also sets the CPU threads
    settings = settings_from(args, device)
    names = _selected(args.only, device, args.quick)
    dataset.load_splits(settings.data_dir, limit=1)  # verify and decompress once, up front
    report: dict = {"schema": 1, "argv": sys.argv[1:], "quick": args.quick,
                    "machine": machine_info(device),
                    "settings": {"device": str(device), "repeats": settings.repeats,
                                 "samples": settings.samples, "warmup": settings.warmup,
                                 "limit": settings.limit, "epochs": settings.epochs,
                                 "evals_per_epoch": settings.evals_per_epoch,
                                 "targets": list(settings.targets),
                                 "eval_batch_size": settings.eval_batch_size, "names": names},
                    "throughput": {}, "epochs": None, "time_to_accuracy": {}, "overhead": None,
                    "race": None, "allocator": None}
    started = time.perf_counter()
    cases = [n for n in names if n in CASES]
    if cases:
        log(f"Throughput: {', '.join(cases)}")
        splits = dataset.load_splits(settings.data_dir, limit=settings.limit)
        report["throughput"] = bench_throughput(cases, splits, settings, log)
    if "overhead" in names:
        log("Overhead of per-rank timing and a step log every 50 steps")
        report["overhead"] = bench_overhead(dataset.load_splits(settings.data_dir,
                                                             limit=settings.limit), settings, log)
    if "allocator" in names:
        log("The trainer with this environment's MALLOC_*_THRESHOLD_ against glibc's")
        report["allocator"] = bench_allocator(settings, log)
    if "epochs" in names:
        log("Seed recipe, whole run: notebook vs package")
        report["epochs"] = bench_epochs(settings, log)
    for preset in TTA_PRESETS:
        if f"tta_{preset}" in names:
            log(f"Time to accuracy: {preset}")
            try:
                report["time_to_accuracy"][preset] = bench_time_to_accuracy(preset, settings,
                                                                            log)
            except UsageError:
                raise
            except Exception as exc:
                report["time_to_accuracy"][preset] = {"error": f"{type(exc).__name__}: {exc}"}
    if "race" in names:
        seeds = args.seeds or (1 if args.quick else 5)
        log(f"The fast preset against the published recipe, {seeds} seed(s)")
        report["race"] = bench_race(settings, seeds, log)
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["total_s"] = time.perf_counter() - started
    report["summary"] = summary(report)
    return report
