"""``local``: run a sweep here, one run after another, each under torchrun or mpiexec with
this interpreter, its output shown and kept in ``<study>/logs/<run>.log`` (``run_study``,
which ``allocation`` shares)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..files import REPO_DIR
from .study import (
    EXITED,
    STARTED,
    create_study,
    read_manifest,
    save_manifest,
    study_id_for,
)
from .sweep import PlannedRun, Sweep, load_sweep, plan

# Variables of an outer launcher that must not reach the runs `local` starts (a stale RANK or
# MASTER_ADDR turns a 1-rank run into a rendezvous that waits forever).
LAUNCHER_PREFIXES = ("SLURM_", "PMI_", "PALS_", "OMPI_", "PBS_", "TORCHELASTIC_", "MPI_LOCAL")
LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                  "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_CONTROL_FD")


def local_command(sweep: Sweep, run: PlannedRun, study_dir: Path, run_id: str,
                  launcher: str, cores_per_rank: Optional[int] = None) -> list[str]:
    """torchrun --standalone (a free port per run) or mpiexec, with the same interpreter.

    ``cores_per_rank`` binds each rank to its own cores (hydra's ``-bind-to core:N``); the
    trainer then uses exactly those cores. Unbound, the ranks share the machine and the
    trainer splits its cores among them, so a 1-rank run gets every core: a comparison of
    decompositions of one machine, not of resources."""
    if launcher == "torchrun":
        if cores_per_rank is not None:
            raise UsageError("cores_per_rank needs --launcher mpiexec (torchrun cannot bind "
                             "ranks to cores); pass --cores-per-rank 0 to run unbound")
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(run.ranks), *trainer_args(sweep, run, study_dir, run_id)]
    mpiexec = (shutil.which("mpiexec", path=str(Path(sys.executable).parent))
               or shutil.which("mpiexec"))
    if mpiexec is None:
        raise UsageError("mpiexec not found; pip install mpich mpi4py, or use "
                         "--launcher torchrun")
    prefix = [mpiexec, "-n", str(run.ranks)]
    if cores_per_rank is not None:
        available = len(os.sched_getaffinity(0))
        if run.ranks * cores_per_rank > available:
            raise UsageError(f"{run.ranks} ranks x {cores_per_rank} cores per rank need "
                             f"{run.ranks * cores_per_rank} cores; this machine gives "
                             f"{available}: lower cores_per_rank or the ranks")
        prefix += ["-bind-to", f"core:{cores_per_rank}"]
    return [*prefix, sys.executable, *trainer_args(sweep, run, study_dir, run_id)]


def trainer_args(sweep: Sweep, run: PlannedRun, study_dir: Path, run_id: str) -> list[str]:
    """``-m mnist_hpc.train`` and a point's flags, after a launcher and the interpreter."""
    return ["-m", "mnist_hpc.train", "--config", sweep.config, "--epochs", str(sweep.epochs),
            *run.train_args, "--results-dir", str(study_dir), "--run-id", run_id]


def _child_environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_NAMES and not k.startswith(LAUNCHER_PREFIXES)}
    env["PYTHONPATH"] = str(REPO_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def cmd_local(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep, args.results_dir)
    runs = plan(sweep)
    launcher = args.launcher or sweep.launcher
    cores = sweep.cores_per_rank if args.cores_per_rank is None else (args.cores_per_rank or None)
    study_id = study_id_for(sweep, args.study_id)
    study_dir = Path(sweep.results_dir) / study_id
    commands = [local_command(sweep, run, study_dir, run.label, launcher, cores) for run in runs]
    if args.dry_run:
        for command in commands:
            print(shlex.join(command))
        return EXIT_OK
    study_dir = create_study(sweep, runs, study_id, f"local-{launcher}")
    return run_study(study_dir, runs, commands, _child_environment(), f"here with {launcher}")


def run_study(study_dir: Path, runs: list[PlannedRun], commands: list[list[str]], env: dict,
              how: str) -> int:
    """Run each command of a created study in turn, its output shown and kept in
    ``<study>/logs/<run>.log``, its exit code and time in the manifest."""
    manifest = read_manifest(study_dir)
    logs = study_dir / "logs"
    logs.mkdir(exist_ok=True)
    print(f"Study {study_dir.name}: {len(runs)} runs {how}; results in {study_dir}",
          flush=True)
    failures = 0
    for entry, run, command in zip(manifest["runs"], runs, commands):
        entry.update(command=command, run_id=run.label, state=STARTED)
        save_manifest(study_dir, manifest)
        print(f"== {run.label}: {shlex.join(command)}", flush=True)
        started = time.perf_counter()
        with open(logs / f"{run.label}.log", "w") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=env, cwd=REPO_DIR)
            for line in process.stdout:
                log.write(line)
                sys.stdout.write(line)
                sys.stdout.flush()
            code = process.wait()
        entry.update(state=EXITED, exit_code=code,
                     elapsed_s=round(time.perf_counter() - started, 3))
        save_manifest(study_dir, manifest)
        if code != 0:
            failures += 1
            print(f"== {run.label} failed with exit {code} (log: {logs / run.label}.log)",
                  file=sys.stderr, flush=True)
    print(f"Done: {len(runs) - failures} of {len(runs)} runs exited 0. Report: "
          f"python -m mnist_hpc.scaling report {study_dir}")
    return EXIT_FAILURE if failures else EXIT_OK
