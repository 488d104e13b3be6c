"""``python -m mnist_hpc.doctor``: the command line. Torch-free, so ``--help`` and bad flags
are answered before torch loads; the run itself is in ``doctor.run``.

The doctor takes the trainer's own flags (``--config``, ``--data-dir``, ``--results-dir``,
``--device``, ``--backend``, ``--timeout``, ...) besides its own, so a job can run it with the
very arguments it gives the trainer, and it checks what that training would use.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from ..config import flags
from ..config import options as run_config
from ..errors import EXIT_FAILURE, EXIT_USAGE, UsageError, describe
from ..files import UsageParser
from ..job import layout
from ..observe import startup
from .options import Options

DEFAULT_MAX_BYTES = 64 * 2**20
QUICK_MAX_BYTES = 2**20
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def _bytes(text: str) -> int:
    """1024, 64K, 64M, 1G (binary units)."""
    number, unit = text.rstrip("KMGkmg"), text[len(text.rstrip("KMGkmg")):].upper()
    if not number.isdigit() or unit not in _UNITS or int(number) * _UNITS[unit] < 8:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size of at least 8 bytes "
                                         f"(bytes, or with K, M or G: 64M)")
    return int(number) * _UNITS[unit]


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog="python -m mnist_hpc.doctor", allow_abbrev=False,
        description="Preflight check of an allocation: run it under the job's launcher "
                    "(one process, torchrun, mpiexec, srun) exactly like the trainer. Rank 0 "
                    "prints a table of the ranks, flags what would break or slow the job, "
                    "benchmarks all-reduce and writes doctor.json. Exit 0: all is well; "
                    "1: a check failed; 2: bad input.",
        epilog="Every flag of python -m mnist_hpc.train is accepted too (--config, "
               "--data-dir, --results-dir, --device, --backend, --timeout, ...): the doctor "
               "checks the data, results directory, device and backend that training would "
               "use, and ignores the rest.")
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=False,
                        help=f"benchmark up to {QUICK_MAX_BYTES} bytes (unless --max-bytes) "
                             "with fewer iterations, for tests")
    parser.add_argument("--max-bytes", type=_bytes, default=None,
                        help=f"largest all-reduce message, e.g. 1M (default: "
                             f"{DEFAULT_MAX_BYTES // 2**20}M)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write doctor.json (default: "
                             "<results-dir>/doctor-<date>-<time>-<random>.json)")
    return parser


def parse(argv: Optional[list[str]]) -> tuple[Options, run_config.RunConfig]:
    args, rest = build_parser().parse_known_args(argv)
    config = flags.parse_args(rest)
    if config.device == "cpu" and config.backend == "nccl":
        raise UsageError("--backend nccl needs CUDA devices, but --device is cpu; "
                         "use --backend gloo")
    max_bytes = args.max_bytes or (QUICK_MAX_BYTES if args.quick else DEFAULT_MAX_BYTES)
    return Options(max_bytes, args.quick, args.out), config


def main(argv: Optional[list[str]] = None) -> int:
    rank = layout.detect_leniently(os.environ).rank
    try:
        options, config = parse(argv)
        from .run import doctor  # torch, only once the command line is good

        return doctor(options, config)
    except UsageError as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as exc:  # a rank that could not finish: named, never silent

        print(f"error: rank {rank} failed: {describe(exc)}; check that every rank started "
              f"and can reach rank 0 (MASTER_ADDR, MASTER_PORT)", file=sys.stderr, flush=True)
        return EXIT_FAILURE


def main_exit() -> None:
    """Console-script and ``python -m`` entry point. Every rank leaves with the code the
    ranks agreed on; ``os._exit`` skips the interpreter shutdown, whose c10d destructors can
    abort after the work is done (see train.main_exit). A check is all start-up: no
    garbage collection in it (observe.startup)."""
    startup.hold_collection()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
