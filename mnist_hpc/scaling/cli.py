"""The command line: ``python -m mnist_hpc.scaling plan|submit|local|allocation|report|model``
(console script ``mnist-hpc-scaling``). Bad input of any kind is one ``error:`` line and exit 2."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from typing import Any, Callable, Optional

from ..errors import EXIT_OK, EXIT_USAGE, UsageError
from ..files import UsageParser
from .allocation import cmd_allocation
from .local import cmd_local
from .perfmodel import DEFAULT_NETWORK, cmd_model
from .report import cmd_report
from .schedulers import SCHEDULERS
from .submit import cmd_submit
from .sweep import LOCAL_LAUNCHERS, MODES, SWEEPS_DIR, load_sweep, plan
from .tables import batch_text, text_table


def cmd_plan(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep, args.results_dir)
    runs = plan(sweep)
    if args.json:
        print(json.dumps({"sweep": asdict(sweep), "runs": [{**asdict(r), "label": r.label}
                                                          for r in runs]}, indent=2))
        return EXIT_OK
    batch_rule = ("fixed global batch" if sweep.mode == "strong" else "fixed per-rank batch")
    print(f"# {sweep.name}: {sweep.mode} scaling ({batch_rule} {sweep.batch_size}), config "
          f"{sweep.config}, {sweep.epochs} epochs, {sweep.repeats} repeat(s), {len(runs)} runs")
    print(f"# results: {sweep.results_dir}/<study_id>/")
    rows = [("run", "ranks", "nodes", "ranks/node", "global batch", "per-rank batch",
             "batch mode", "TRAIN_ARGS")]
    rows += [(r.label, r.ranks, r.nodes, r.ranks_per_node, r.global_batch,
              batch_text(r.per_rank_batch), r.batch_mode, " ".join(r.train_args)) for r in runs]
    print(text_table(rows))
    return EXIT_OK


def _number(kind: type, minimum: float, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite number of ``kind`` at or above ``minimum`` (above, if
    ``strict``), so that a zero or negative count is refused here, not met as a crash later."""
    bound = f"{'>' if strict else '>='} {minimum:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (
                strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text!r} is not a{' whole' * (kind is int)} "
                                             f"number {bound}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="python -m mnist_hpc.scaling",
                         description="Scaling studies: plan a sweep, submit it or run it here, "
                                     "then report throughput, speedup and efficiency.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=UsageParser)
    sweep_help = "sweep YAML (a path, or a shipped one: " + ", ".join(
        sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))) + ")"
    study_id_help = "name of the study folder (default: name-time-random)"

    def command(name: str, summary: str, func: Callable,
                sweep: bool = True) -> argparse.ArgumentParser:
        """A subcommand; ``sweep``: it takes a sweep file."""
        p = sub.add_parser(name, help=summary, description=summary)
        p.set_defaults(func=func)
        if sweep:
            p.add_argument("sweep", help=sweep_help)
            p.add_argument("--results-dir", help="parent of the study folder (default: the "
                                                 "sweep's results_dir, else the trainer's)")
        return p

    p = command("plan", "list the runs of a sweep with their batches", cmd_plan)
    p.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                   help="print the plan as JSON")

    p = command("submit", "check the whole study, then submit one job per run", cmd_submit)
    p.add_argument("--scheduler", choices=SCHEDULERS, required=True,
                   help="the cluster's scheduler: its section of the sweep and its job template")
    p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                   help="check and print the exact commands; submit nothing")
    p.add_argument("--account", help="project to charge (overrides the sweep's)")
    p.add_argument("--study-id", help=study_id_help)
    p.add_argument("--test-only", action=argparse.BooleanOptionalAction, default=True,
                   help="slurm: check every job with sbatch --test-only first; off: format "
                        "checks only")

    p = command("local", "run the sweep here, one run after another", cmd_local)
    p.add_argument("--launcher", choices=LOCAL_LAUNCHERS,
                   help="how to start the ranks (default: the sweep's local.launcher, torchrun)")
    p.add_argument("--cores-per-rank", type=_number(int, 0),
                   help="mpiexec only: bind each rank to N cores; 0: unbound, the ranks share "
                        "the machine (default: the sweep's local.cores_per_rank)")
    p.add_argument("--study-id", help=study_id_help)
    p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                   help="print the commands; run nothing")

    p = command("allocation", "inside a batch job: run the sweep as job steps (srun, or "
                              "mpiexec on PBS's nodes) on the allocation's nodes", cmd_allocation)
    p.add_argument("--study-id", help=study_id_help)
    p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                   help="print the commands; run nothing")

    p = command("report", "tables and plots from a study folder", cmd_report, sweep=False)
    p.add_argument("study_dir", help="the study folder (<results_dir>/<study_id>)")
    p.add_argument("--out", help="where to write scaling.csv/.md and plots (default: study_dir)")
    p.add_argument("--model", metavar="GB_PER_S,LATENCY_US",
                   help="add the ring all-reduce model for this network, e.g. 25,10")

    p = command("model", "the performance model alone, from a compute time", cmd_model,
                sweep=False)
    p.add_argument("--compute-ms", type=_number(float, 0, strict=True), required=True,
                   help="compute time of one training step of --batch samples on one rank")
    p.add_argument("--batch", type=_number(int, 1), default=512,
                   help="global batch (strong) or per-rank batch (weak)")
    p.add_argument("--mode", choices=MODES, default="strong",
                   help="strong: a fixed global batch; weak: a fixed batch per rank")
    p.add_argument("--network", help=f"GB_PER_S,LATENCY_US (default: {DEFAULT_NETWORK})")
    p.add_argument("--from", dest="from_doctor", metavar="DOCTOR_JSON",
                   help="the network as python -m mnist_hpc.doctor measured it (its doctor.json)")
    p.add_argument("--params", type=_number(int, 1), default=1_199_882,
                   help="parameters all-reduced")
    p.add_argument("--ranks", default="1,2,4,8,16,32,64,128,256,512,1024",
                   help="comma-separated rank counts to model")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
