"""The command line: which measurements to run (``names``), their settings; the run itself is
in ``bench.run``. Torch-free, so ``--help``, ``--version`` and bad flags are answered before
torch loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from ..files import REPO_DIR, UsageParser, write_json
from .names import NAMES
from .report import failures, format_report


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
                             + ", ".join(NAMES))
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds of the race against the published recipe, 0 to N-1 "
                             "(default 5; 1 with --quick)")
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


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from .run import run  # torch, only once the command line is good

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
