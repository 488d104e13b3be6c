"""``python -m mnist_hpc.runs``: the runs of a results directory at a glance, and two runs
compared. Torch-free: it reads run directories only (``mnist_hpc.run.listing`` and
``mnist_hpc.run.compare``).

    python -m mnist_hpc.runs [DIR] [--csv]                 one row per run, oldest first
    python -m mnist_hpc.runs compare A B [--dir DIR] [--plot PATH]
                                                           config differences, both histories

DIR defaults to the trainer's default results directory (a directory named ``compare`` is
given as ``./compare``). A and B are run directories or run ids under DIR. Bad input (no such
directory, an unknown run) exits 2 with the fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .config.options import RunConfig
from .errors import UsageError, run_command
from .files import UsageParser
from .run import compare, listing, metrics_json

PROG = "python -m mnist_hpc.runs"
COMPARE = "compare"


def default_results_dir() -> str:
    return RunConfig().results_dir


def list_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog=PROG,
        description="List the runs in a results directory: run id, status, model, ranks, "
                    "epochs done/planned, test accuracy, wall time, samples/s, start time. "
                    f"'{PROG} {COMPARE} A B' compares two runs ({PROG} {COMPARE} --help).")
    parser.add_argument("results_dir", nargs="?", default=default_results_dir(),
                        metavar="DIR", help="the directory that holds the run directories "
                                            "(the trainer's --results-dir; default: "
                                            "%(default)s)")
    parser.add_argument("--csv", action=argparse.BooleanOptionalAction, default=False,
                        help="print CSV (full precision, the whole note) instead of a table")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = UsageParser(
        prog=f"{PROG} {COMPARE}",
        description="Compare two runs: the config keys whose values differ, both histories "
                    "side by side per epoch, and a PNG of both runs' curves.")
    parser.add_argument("a", metavar="A", help="the first run: a run directory, or a run id "
                                               "under --dir")
    parser.add_argument("b", metavar="B", help="the second run, likewise")
    parser.add_argument("--dir", dest="results_dir", default=default_results_dir(),
                        metavar="DIR", help="where run ids are looked up (default: "
                                            "%(default)s)")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="where to write the PNG (default: compare-A-B.png, named after "
                             "the two runs, in the current directory; a run's own directory "
                             "is never written to)")
    return parser


def build_parsers() -> list[argparse.ArgumentParser]:
    """The listing's parser and compare's (``runs [DIR]`` takes a directory where a
    subcommand would go, so ``main`` picks the parser by the first word)."""
    return [list_parser(), compare_parser()]


def plot_path(names: tuple[str, str]) -> Path:
    return Path(f"compare-{names[0][:60]}-{names[1][:60]}.png")


def run_list(args: argparse.Namespace) -> None:
    runs = listing.find_runs(Path(args.results_dir))
    if args.csv:
        print(listing.csv(runs), end="")
    elif runs:
        print(listing.table(runs))
    else:
        print(f"no runs in {args.results_dir} (no subdirectory holds a "
              f"{metrics_json.FILENAME})")


def run_compare(args: argparse.Namespace) -> None:
    results_dir = Path(args.results_dir)
    dirs = [listing.resolve(name, results_dir) for name in (args.a, args.b)]
    a, b = (metrics_json.read_for_user(d) for d in dirs)
    names = (dirs[0].name, dirs[1].name)
    print(compare.report(a, b, names))
    path = Path(args.plot) if args.plot else plot_path(names)
    try:
        compare.plot(a, b, names, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror}); give --plot a path in a "
                         f"directory you can write to") from None
    print(f"\nWrote {path}")


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == [COMPARE]:
        return run_command(lambda: run_compare(compare_parser().parse_args(args[1:])))
    return run_command(lambda: run_list(list_parser().parse_args(args)))


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
