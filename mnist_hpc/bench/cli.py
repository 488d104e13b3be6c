"""The command line: which measurements to run, the run itself, the table and the JSON."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ..data import dataset
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from ..files import REPO_DIR, UsageParser, write_json
from ..job import process_group
from ..job.layout import DistEnv
from .accuracy import TTA_PRESETS, bench_time_to_accuracy
from .epochs import bench_epochs
from .machine import machine_info
from .overhead import bench_overhead
from .report import failures, format_report, summary
from .settings import settings_from
from .throughput import CASES, CUDA_CASES, THROUGHPUT_CASES, bench_throughput

GROUPS = {"throughput": THROUGHPUT_CASES + CUDA_CASES, "epochs": ("epochs",),
          "tta": tuple(f"tta_{p}" for p in TTA_PRESETS), "overhead": ("overhead",)}


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="python -m mnist_hpc.bench",
        description="Training throughput, the seed recipe's wall time and time to accuracy: "
                    "the notebook's loop against this package, in one run on one machine.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="device to measure (auto: cuda if present, else cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per timed repeat (default: 4096 on CPU, 49152 on GPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps before timing (default: 2 on CPU, 20 on GPU)")
    parser.add_argument("--only", default=None,
                        help="comma-separated cases or groups to run: "
                             + ", ".join(dict.fromkeys([*GROUPS, *CASES, *GROUPS["tta"]])))
    parser.add_argument("--evals-per-epoch", type=int, default=4,
                        help="test evaluations per epoch in the time-to-accuracy runs")
    parser.add_argument("--targets", default="98,99", help="test accuracies to time, percent")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the presets' epochs (epochs and time-to-accuracy runs)")
    parser.add_argument("--limit", type=int, default=None,
                        help="keep only the first N images of each split")
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="override the presets' eval_batch_size in the package's runs")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                        help="a smoke run (< 1 min on 2 cores): 1 repeat, tiny subsets, "
                             "1 epoch, no compile unless --only names it")
    parser.add_argument("--data-dir", default=str(REPO_DIR / "data"),
                        help="directory holding MNIST/raw/")
    parser.add_argument("--out", default="bench.json", help="JSON file to write")
    return parser


def _selected(only: Optional[str], device: torch.device, quick: bool) -> list[str]:
    known = set(CASES) | {"epochs", "overhead"} | set(GROUPS["tta"])
    if only is None:
        names = list(THROUGHPUT_CASES) + (list(CUDA_CASES) if device.type == "cuda" else [])
        if quick:  # no compile (minutes) and no batch larger than the tiny subsets
            names = [n for n in names if not CASES[n].compile and n not in CUDA_CASES]
        return names + ["epochs"] + list(GROUPS["tta"])
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
                    "throughput": {}, "epochs": None, "time_to_accuracy": {}, "overhead": None}
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
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["total_s"] = time.perf_counter() - started
    report["summary"] = summary(report)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        report = run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print()
    print(format_report(report))
    print(f"\nWrote {out}")
    problems = failures(report)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_FAILURE if problems else EXIT_OK


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
