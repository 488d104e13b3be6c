"""Schedulers: the qsub and sbatch command of each run, and every rule a study must meet
before anything is submitted (Polaris queue limits, walltime and time formats, the account,
and Slurm's own ``sbatch --test-only`` verdict).

The job templates take their parameters as exported variables (CONFIG, EPOCHS, TRAIN_ARGS,
RESULTS_DIR): one contract, in one order, for both schedulers.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..files import REPO_DIR, parse_duration
from .sweep import PlannedRun, Sweep

SCHEDULERS = ("pbs", "slurm")
TEMPLATES = {"pbs": REPO_DIR / "jobs" / "polaris_ddp.pbs",
             "slurm": REPO_DIR / "jobs" / "slurm.sh"}


# --- Polaris queue rules (docs.alcf.anl.gov/polaris/running-jobs/, checked 2025) -----------

@dataclass(frozen=True)
class QueueRule:
    min_nodes: int
    max_nodes: int
    max_walltime_s: int
    max_jobs: Optional[int]  # jobs one user/project may have queued at once
    note: str = ""


MIN_WALLTIME_S = 5 * 60  # every Polaris queue: "Time Min 5 min"
POLARIS_GPUS_PER_NODE = 4
POLARIS_QUEUES = {
    "debug": QueueRule(1, 2, 3600, None),
    "debug-scaling": QueueRule(1, 10, 3600, 1, "1 job running/accruing/queued per user"),
    "prod": QueueRule(10, 496, 24 * 3600, 100, "routing queue; 100 jobs queued per project"),
    "preemptable": QueueRule(1, 10, 72 * 3600, 20, "20 jobs per project; may be killed"),
    "demand": QueueRule(1, 56, 3600, 100, "by request only"),
}


# --- durations: the shared parser, held to the forms each scheduler's checks are written in --

def parse_walltime(text: str) -> int:
    """PBS walltime H:MM:SS -> seconds; anything else is a UsageError.

    qsub takes other forms too, but the queue limits are written as H:MM:SS, and "1:00" (one
    minute to PBS, an hour to a reader) or "0:90:00" are typos worth refusing."""
    fields = (text or "").split(":")
    if (len(fields) != 3 or not all(f.isdecimal() for f in fields)
            or any(len(f) != 2 or int(f) > 59 for f in fields[1:])):
        raise UsageError(f"walltime {text!r} is not H:MM:SS (e.g. 0:30:00)")
    return int(parse_duration(text))


def is_slurm_time(text: str) -> bool:
    """Slurm's --time forms: MM, MM:SS, H:MM:SS, D-H, D-H:MM, D-H:MM:SS, in whole numbers."""
    try:
        parse_duration(text, bare_unit_s=60, days=True)
    except ValueError:
        return False
    return "." not in text


# --- commands -------------------------------------------------------------------------------

def _export_value(name: str, value: str, separator: str = ",") -> str:
    if separator in value:
        raise UsageError(f"{name}={value!r} holds a comma, which qsub -v and sbatch --export use "
                         f"to separate variables; remove it (e.g. pass lists with spaces)")
    return f"{name}={value}"


def _exports(sweep: Sweep, run: PlannedRun, study_dir: Path) -> list[str]:
    """The templates' parameter contract, in one order for both schedulers."""
    return [_export_value("CONFIG", sweep.config),
            _export_value("EPOCHS", str(sweep.epochs)),
            _export_value("TRAIN_ARGS", " ".join(run.train_args)),
            _export_value("RESULTS_DIR", str(study_dir))]


def pbs_queue(sweep: Sweep, run: PlannedRun) -> Optional[str]:
    queue = sweep.pbs.queue
    if not isinstance(queue, dict):
        return queue
    for name, (low, high) in queue.items():
        if low <= run.nodes <= high:
            return name
    return None


def pbs_command(sweep: Sweep, run: PlannedRun, study_dir: Path, study_id: str,
                account: Optional[str]) -> list[str]:
    settings = sweep.pbs
    command = ["qsub", "-N", _job_name(study_id, run),
               "-l", f"select={run.nodes}:system={settings.system}",
               "-l", f"walltime={settings.walltime}"]
    if settings.filesystems:
        command += ["-l", f"filesystems={settings.filesystems}"]
    queue = pbs_queue(sweep, run)
    if queue:
        command += ["-q", queue]
    if queue == "preemptable":
        command += ["-r", "y"]  # rerun after preemption; the template resumes the run dir
    if account:
        command += ["-A", account]
    exports = _exports(sweep, run, study_dir)
    exports.insert(2, f"NGPUS_PER_NODE={run.ranks_per_node}")
    command += [*settings.extra_args, "-v", ",".join(exports),
                str(Path(settings.template or TEMPLATES["pbs"]).resolve())]
    return command


def slurm_command(sweep: Sweep, run: PlannedRun, study_dir: Path, study_id: str,
                  account: Optional[str], test_only: bool = False) -> list[str]:
    settings = sweep.slurm
    command = ["sbatch", "--test-only" if test_only else "--parsable",
               "--job-name", _job_name(study_id, run),
               "--nodes", str(run.nodes), "--ntasks-per-node", str(run.ranks_per_node),
               # one GPU per task (the template asks for 4 per node by default)
               "--gpus-per-node", "0" if settings.cpu_only else str(run.ranks_per_node)]
    if settings.cpus_per_task:
        command += ["--cpus-per-task", str(settings.cpus_per_task)]
    # the job log next to the study's run directories (the folder exists before sbatch)
    command += ["--output", str(study_dir / "slurm-%j.out")]
    if settings.partition:
        command += ["--partition", settings.partition]
    if settings.time:
        command += ["--time", settings.time]
    if account:
        command += ["--account", account]
    exports = ["ALL", *_exports(sweep, run, study_dir)]
    if settings.cpu_only:
        exports.append("CPU_ONLY=1")
    command += [*settings.extra_args, "--export=" + ",".join(exports),
                str(Path(settings.template or TEMPLATES["slurm"]).resolve())]
    return command


def _job_name(study_id: str, run: PlannedRun) -> str:
    # PBS job names: at most 236 characters, starting with a letter
    return f"s-{study_id}"[:200] + f"-{run.label}"


def pbs_violations(sweep: Sweep, runs: list[PlannedRun], account: Optional[str]) -> list[str]:
    """Every way the study breaks the PBS target's rules (Polaris queues when system=polaris)."""
    problems = []
    settings = sweep.pbs
    if not account:
        problems.append("no account: set pbs.account in the sweep or pass --account PROJECT "
                        "(qsub -A)")
    walltime_s = None
    if not settings.walltime:
        problems.append("no walltime: set pbs.walltime to H:MM:SS (e.g. \"0:30:00\")")
    else:
        try:
            walltime_s = parse_walltime(settings.walltime)
        except UsageError as exc:
            problems.append(str(exc))
    if not settings.queue:
        problems.append("no queue: set pbs.queue (Polaris: debug, debug-scaling, prod, "
                        "preemptable)")
        return problems
    if settings.system != "polaris":
        return problems  # queue limits known only for Polaris
    if sweep.ranks_per_node > POLARIS_GPUS_PER_NODE:
        problems.append(f"ranks_per_node {sweep.ranks_per_node} exceeds the "
                        f"{POLARIS_GPUS_PER_NODE} GPUs of a Polaris node")
    if walltime_s is not None and walltime_s < MIN_WALLTIME_S:
        problems.append(f"walltime {settings.walltime} is under the 5-minute minimum of every "
                        f"Polaris queue")
    per_queue: dict[str, int] = {}
    for run in runs:
        queue = pbs_queue(sweep, run)
        if queue is None:
            problems.append(f"run {run.label}: {run.nodes} nodes fall in no node range of "
                            f"pbs.queue {settings.queue}")
            continue
        rule = POLARIS_QUEUES.get(queue)
        if rule is None:
            problems.append(f"queue {queue!r} is not a Polaris queue you can submit to; use "
                            f"one of {', '.join(POLARIS_QUEUES)} (prod routes to small, "
                            f"medium and large)")
            continue
        per_queue[queue] = per_queue.get(queue, 0) + 1
        if not rule.min_nodes <= run.nodes <= rule.max_nodes:
            problems.append(f"run {run.label}: {run.nodes} nodes, but Polaris queue {queue} "
                            f"takes {rule.min_nodes}-{rule.max_nodes} nodes")
        if walltime_s is not None and walltime_s > rule.max_walltime_s:
            problems.append(f"run {run.label}: walltime {settings.walltime} exceeds queue "
                            f"{queue}'s limit of {_hms(rule.max_walltime_s)}")
    for queue, count in per_queue.items():
        rule = POLARIS_QUEUES[queue]
        if rule.max_jobs is not None and count > rule.max_jobs:
            problems.append(f"{count} jobs for queue {queue}, which allows {rule.max_jobs} "
                            f"({rule.note}); use preemptable (1-10 nodes) or fewer runs")
    return list(dict.fromkeys(problems))


def slurm_violations(sweep: Sweep, runs: list[PlannedRun]) -> list[str]:
    problems = []
    if sweep.slurm.time is not None and not is_slurm_time(sweep.slurm.time):
        problems.append(f"slurm.time {sweep.slurm.time!r} is not a Slurm time (MM, MM:SS, "
                        f"H:MM:SS, D-H, D-H:MM or D-H:MM:SS)")
    return problems


def slurm_test_only(sweep: Sweep, runs: list[PlannedRun], study_dir: Path, study_id: str,
                    account: Optional[str]) -> list[str]:
    """``sbatch --test-only`` for each run: Slurm's own verdict, nothing submitted."""
    problems = []
    for run in runs:
        command = slurm_command(sweep, run, study_dir, study_id, account, test_only=True)
        out = subprocess.run(command, capture_output=True, text=True, cwd=REPO_DIR)
        if out.returncode != 0:
            message = " ".join((out.stderr or out.stdout).split()) or f"exit {out.returncode}"
            problems.append(f"run {run.label}: sbatch --test-only refused it: {message}")
    return problems


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
