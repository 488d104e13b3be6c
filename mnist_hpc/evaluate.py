"""``python -m mnist_hpc.evaluate RUN_DIR``: a completed run's model (its ``model.pt``) on the
MNIST test split, or on a folder of images.

    python -m mnist_hpc.evaluate results/RUN               the 10,000 test images
    python -m mnist_hpc.evaluate results/RUN --limit 999   the first 999 (what a run trained
                                                           with --limit 999 evaluated)
    python -m mnist_hpc.evaluate results/RUN --images DIR  one line per PNG: name, digit,
                                                           probability (tab-separated)

The test split runs under any launcher (plain python, torchrun, mpiexec, srun) through the
trainer's process group and its exact evaluation: every rank a shard, the sums all-reduced,
so the counts are those of training. ``--images`` runs on rank 0, on the CPU. ``--help`` and
bad input are answered before torch loads; exit codes as the trainer's.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

from .config.options import RunConfig
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, describe
from .files import UsageParser
from .job import layout, watchdog
from .run import rundir


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> UsageParser:
    defaults = RunConfig()
    cli = UsageParser(prog="python -m mnist_hpc.evaluate",
                      description="Evaluate a completed run's model.pt on the MNIST test split "
                                  "(any launcher, exact all-reduced counts) or on a folder of "
                                  "PNG images.")
    cli.add_argument("run_dir", metavar="RUN_DIR", help="a completed run's directory (holds "
                     "model.pt)")
    cli.add_argument("--images", metavar="DIR", default=None,
                     help="predict each PNG in DIR (converted to greyscale, resized to 28x28) "
                          "instead of evaluating the test split")
    cli.add_argument("--invert", action=argparse.BooleanOptionalAction, default=False,
                     help="with --images: invert the grey levels (dark digits on a light "
                          "ground; MNIST's are light on dark)")
    cli.add_argument("--limit", type=positive_int, metavar="N", default=None,
                     help="only the first N test images, as a run trained with --limit N "
                          "evaluated them; unset: the whole test split")
    cli.add_argument("--data-dir", metavar="DIR", default=defaults.data_dir,
                     help="directory holding MNIST/raw/*.gz (torchvision's layout)")
    cli.add_argument("--download", action=argparse.BooleanOptionalAction, default=False,
                     help="let torchvision download missing MNIST files")
    cli.add_argument("--batch-size", type=positive_int, metavar="N", default=None,
                     help="evaluation batch size; unset: the run's own (counts never depend "
                          "on it)")
    cli.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                     help="auto: cuda if present, else mps (one process), else cpu")
    cli.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"),
                     help="process-group backend; auto: nccl on cuda, gloo otherwise")
    cli.add_argument("--timeout", type=positive_float, metavar="SECONDS", default=defaults.timeout,
                     help="seconds a collective may wait before every rank gives up")
    return cli


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """Parsed and checked without torch: the run holds a model.pt, the folder holds PNGs."""
    args = build_parser().parse_args(argv)
    rundir.model_path(args.run_dir)
    if args.images is not None:
        from .data.images import image_files  # its torch import is inside the reader

        args.image_paths = image_files(args.images)
    elif args.invert:
        raise UsageError("--invert applies to --images only; add --images DIR or drop it")
    return args


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def predict_images(args: argparse.Namespace) -> None:
    from .run import evaluation  # torch loads here

    for path, (digit, probability) in zip(args.image_paths, evaluation.predict_images(
            args.run_dir, args.image_paths, args.invert)):
        print(f"{path.name}\t{digit}\t{probability:.4f}", flush=True)


def evaluate_test_split(args: argparse.Namespace, job: layout.DistEnv) -> None:
    from .job import process_group
    from .run import evaluation  # torch loads here

    with process_group.session(args.device, args.backend, args.timeout, job=job) as env:
        result = evaluation.evaluate_run(args.run_dir, env, args.data_dir, args.limit,
                                         args.download, args.batch_size)
        if result is not None:
            print(f"{Path(args.run_dir) / rundir.MODEL} on {env.world_size} rank(s), "
                  f"{env.device}", flush=True)
            print(f"Test accuracy: {result.accuracy:.4f}, test loss: {result.loss:.4f}, "
                  f"samples: {result.count} ({int(result.correct)} correct)", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    """Evaluate; return the exit code. Only rank 0 prints results and errors."""
    rank = layout.detect_leniently(os.environ).rank
    try:
        args = parse_args(argv)
        if args.images is not None:
            if rank == 0:
                predict_images(args)
            return EXIT_OK
        job = watchdog.find_job(os.environ, args.timeout)
        rank = job.rank
        evaluate_test_split(args, job)
        return EXIT_OK
    except UsageError as exc:
        if rank == 0:
            _print_error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line per failing rank, as the trainer prints it
        _print_error(f"rank {rank} failed: {describe(exc)}")
        return EXIT_FAILURE


def main_exit() -> None:
    """Console-script and ``python -m`` entry point; ends with ``os._exit`` once the output
    is flushed, as the trainer does (c10d's destructors can abort at interpreter shutdown)."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_exit()
