"""``submit``: check the whole study against the scheduler's rules, then submit one job per
run, recording each job id in the manifest as it comes. A study that breaks any rule is
refused whole (exit 2) before anything is submitted or any folder is made."""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from ..files import REPO_DIR
from .schedulers import (
    TEMPLATES,
    pbs_command,
    pbs_violations,
    slurm_command,
    slurm_test_only,
    slurm_violations,
)
from .study import (
    MANIFEST,
    SUBMIT_FAILED,
    SUBMITTED,
    create_study,
    read_manifest,
    save_manifest,
    study_id_for,
)
from .sweep import load_sweep, plan


def cmd_submit(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep, args.results_dir)
    runs = plan(sweep)
    study_id = study_id_for(sweep, args.study_id)
    study_dir = Path(sweep.results_dir) / study_id
    scheduler = args.scheduler
    account = args.account or (sweep.pbs.account if scheduler == "pbs" else sweep.slurm.account)

    if scheduler == "pbs":
        problems = pbs_violations(sweep, runs, account)
    else:
        problems = slurm_violations(sweep, runs)
    build = pbs_command if scheduler == "pbs" else slurm_command
    commands = []
    try:
        commands = [build(sweep, run, study_dir, study_id, account) for run in runs]
    except UsageError as exc:  # a comma in an exported value
        problems.append(str(exc))
    template = Path(getattr(sweep, scheduler).template or TEMPLATES[scheduler])
    if not args.dry_run and not template.is_file():
        problems.append(f"job template {template} does not exist; set {scheduler}.template")
    tool = "qsub" if scheduler == "pbs" else "sbatch"
    if not args.dry_run and shutil.which(tool) is None:
        problems.append(f"{tool} is not on PATH: submit from a {scheduler.upper()} login node, "
                        f"or use --dry-run to print the commands")
    checked = "format and queue rules"
    if scheduler == "slurm" and not problems:
        if shutil.which("sbatch") and args.test_only:
            problems += slurm_test_only(sweep, runs, study_dir, study_id, account)
            checked = "sbatch --test-only"
        else:
            checked = "format only (no sbatch --test-only)"
    if problems:
        print(f"error: study {sweep.name} refused, nothing submitted ({len(problems)} "
              f"problem{'s' * (len(problems) > 1)}):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_USAGE

    if args.dry_run:
        print(f"# {len(runs)} {scheduler} jobs for study {study_id} (checked: {checked}); "
              f"run from {REPO_DIR}:")
        print(shlex.join(["cd", str(REPO_DIR)]))
        print(shlex.join(["mkdir", "-p", str(study_dir)]))
        for command in commands:
            print(shlex.join(command))
        return EXIT_OK

    study_dir = create_study(sweep, runs, study_id, scheduler)
    manifest = read_manifest(study_dir)
    print(f"Study {study_id}: {len(runs)} {scheduler} jobs (checked: {checked}); "
          f"results in {study_dir}")
    for entry, command in zip(manifest["runs"], commands):
        entry["command"] = command
        out = subprocess.run(command, capture_output=True, text=True, cwd=REPO_DIR)
        job_id = _job_id(out.stdout) if out.returncode == 0 else None
        if job_id is None:
            entry["state"] = SUBMIT_FAILED
            entry["error"] = " ".join((out.stderr + out.stdout).split())[:500]
            save_manifest(study_dir, manifest)
            submitted = [e["job_id"] for e in manifest["runs"] if e["job_id"]]
            print(f"error: {tool} failed for run {entry['label']} (exit {out.returncode}): "
                  f"{entry['error']}; submitted before it: {', '.join(submitted) or 'none'} "
                  f"(see {study_dir / MANIFEST})", file=sys.stderr)
            return EXIT_FAILURE
        entry["job_id"], entry["state"] = job_id, SUBMITTED
        save_manifest(study_dir, manifest)
        print(f"  {entry['label']}: job {job_id}")
    print(f"When the jobs have finished: python -m mnist_hpc.scaling report {study_dir}")
    return EXIT_OK


def _job_id(stdout: str) -> Optional[str]:
    """qsub prints ``123.server``; sbatch --parsable prints ``123`` or ``123;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    job = lines[-1].split(";")[0]
    # files.NAME_PATTERN plus brackets: PBS array jobs are numbered 123[].server
    return job if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\[\]-]*", job) else None
