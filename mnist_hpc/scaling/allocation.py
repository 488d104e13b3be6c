"""``allocation``: run a sweep inside the batch job it is called from, every point a job step
on the first nodes of the allocation it needs: ``srun`` under Slurm, ``mpiexec`` with a host
file of the first lines of ``PBS_NODEFILE`` under PBS. One allocation of the largest point's
nodes runs the whole study with no queue wait between points:

    sbatch --nodes=2 --ntasks-per-node=4 --wrap "python -m mnist_hpc.scaling allocation SWEEP"
    qsub -l select=2 -- python -m mnist_hpc.scaling allocation SWEEP   (from a job script)

Every point must fit the allocation (its nodes, its ranks per node); a point that does not
is refused before anything runs."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Mapping

from ..errors import EXIT_OK, UsageError
from ..job import hostlist
from .local import run_study, trainer_args
from .study import create_study, study_id_for
from .sweep import PlannedRun, Sweep, load_sweep, plan


def allocated_nodes(environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """("slurm" or "pbs", the allocation's nodes in order) from the job's own variables."""
    if environ.get("SLURM_JOB_ID") and environ.get("SLURM_JOB_NODELIST"):
        return "slurm", hostlist.expand(environ["SLURM_JOB_NODELIST"])
    if environ.get("PBS_NODEFILE"):
        try:
            lines = Path(environ["PBS_NODEFILE"]).read_text().split()
        except OSError as exc:
            raise UsageError(f"cannot read PBS_NODEFILE {environ['PBS_NODEFILE']}: {exc}")
        return "pbs", list(dict.fromkeys(lines))  # one line per rank slot on some sites
    raise UsageError("scaling allocation runs inside a batch job (sbatch, salloc or qsub), "
                     "whose nodes it uses; outside one, use 'scaling local' (this machine) or "
                     "'scaling submit' (a job per point)")


def step_command(scheduler: str, sweep: Sweep, run: PlannedRun, study_dir: Path,
                 environ: Mapping[str, str]) -> list[str]:
    """One point as a job step on its first ``run.nodes`` nodes."""
    train = [sys.executable, *trainer_args(sweep, run, study_dir, run.label)]
    if scheduler == "pbs":  # Cray PALS's spelling, as jobs/polaris_ddp.pbs uses it
        hosts = study_dir / "logs" / f"{run.label}.hosts"
        return ["mpiexec", "-n", str(run.ranks), "--ppn", str(run.ranks_per_node),
                "--hostfile", str(hosts), *train]
    # srun 22.05-23.02 does not pass sbatch's --cpus-per-task on to a step
    cpus = ([f"--cpus-per-task={environ['SLURM_CPUS_PER_TASK']}"]
            if environ.get("SLURM_CPUS_PER_TASK") else [])
    return ["srun", f"--nodes={run.nodes}", f"--ntasks={run.ranks}",
            f"--ntasks-per-node={run.ranks_per_node}", *cpus, "--kill-on-bad-exit=1", *train]


def check_fits(runs: list[PlannedRun], nodes: list[str], environ: Mapping[str, str]) -> None:
    too_big = [r.label for r in runs if r.nodes > len(nodes)]
    if too_big:
        raise UsageError(f"{', '.join(too_big)} need more than the allocation's {len(nodes)} "
                         f"node(s) ({', '.join(nodes)}): ask for {max(r.nodes for r in runs)} "
                         "or drop those points")
    per_node = environ.get("SLURM_NTASKS_PER_NODE", "").partition("(")[0]
    if per_node.isdigit() and any(r.ranks_per_node > int(per_node) for r in runs):
        raise UsageError(f"the sweep puts up to {max(r.ranks_per_node for r in runs)} ranks on "
                         f"a node; the allocation has {per_node} tasks per node: submit with "
                         "--ntasks-per-node set to the largest")


def cmd_allocation(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep, args.results_dir)
    runs = plan(sweep)
    scheduler, nodes = allocated_nodes(os.environ)
    check_fits(runs, nodes, os.environ)
    study_id = study_id_for(sweep, args.study_id)
    study_dir = Path(sweep.results_dir) / study_id
    commands = [step_command(scheduler, sweep, run, study_dir, os.environ) for run in runs]
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return EXIT_OK
    study_dir = create_study(sweep, runs, study_id, f"allocation-{scheduler}")
    if scheduler == "pbs":
        (study_dir / "logs").mkdir()
        for run in runs:
            (study_dir / "logs" / f"{run.label}.hosts").write_text(
                "".join(f"{node}\n" for node in nodes[:run.nodes]))
    return run_study(study_dir, runs, commands, {**os.environ},
                     f"as job steps in this {scheduler} allocation ({len(nodes)} node(s))")
