"""Scaling studies: plan a sweep, submit it (PBS or Slurm) or run it here, then report.

``python -m mnist_hpc.scaling plan|submit|local|report|model``. A sweep YAML names the
points (ranks or nodes), the batch rule (strong: fixed global batch; weak: fixed per-rank
batch) and the scheduler settings. Every run of a study writes its run directory under
``<results_dir>/<study_id>/``, next to ``study.json``, the manifest of the planned runs and
their job ids; ``report`` reads that folder, so a run that failed or never started is listed,
never silently dropped.

Nothing here trains: each run is ``python -m mnist_hpc.train`` started by a launcher or a job
template. No torch import: planning and reporting work on a login node.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import os
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from . import config as run_config
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from .files import atomic_write, write_json

MODES = ("strong", "weak")
LAUNCHERS = ("torchrun", "mpiexec")
SCHEDULERS = ("pbs", "slurm")
TEMPLATES = {"pbs": run_config.REPO_DIR / "jobs" / "polaris_ddp.pbs",
             "slurm": run_config.REPO_DIR / "jobs" / "slurm.sh"}
SWEEPS_DIR = run_config.PACKAGE_DIR / "sweeps"
MANIFEST = "study.json"
# The trainer flags a sweep sets itself, and the sweep key to use instead.
RESERVED_FLAGS = {"--batch-size": "batch_size", "--batch-mode": "mode", "--epochs": "epochs",
                  "--config": "config", "--results-dir": "results_dir", "--run-id": "(none)",
                  "--resume": "(none)"}
# Variables of an outer launcher that must not reach the runs `local` starts (a stale RANK or
# MASTER_ADDR turns a 1-rank run into a rendezvous that waits forever).
LAUNCHER_PREFIXES = ("SLURM_", "PMI_", "PALS_", "OMPI_", "PBS_", "TORCHELASTIC_", "MPI_LOCAL")
LAUNCHER_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                  "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "HYDRA_CONTROL_FD")


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


# --- the sweep ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PbsSettings:
    queue: Any = None  # a queue name, or {queue: "LO-HI" node range} to pick per run
    walltime: Optional[str] = None  # H:MM:SS
    account: Optional[str] = None  # the project to charge (-A)
    system: str = "polaris"  # -l select=N:system=...; Polaris queue rules apply to polaris
    filesystems: Optional[str] = None  # -l filesystems=...; unset: the template's directive
    template: Optional[str] = None  # default jobs/polaris_ddp.pbs
    extra_args: tuple = ()  # more qsub arguments, passed as given


@dataclass(frozen=True)
class SlurmSettings:
    partition: Optional[str] = None
    time: Optional[str] = None  # Slurm time formats: MM, MM:SS, H:MM:SS, D-H[:MM[:SS]]
    account: Optional[str] = None
    cpu_only: bool = False  # CPU_ONLY=1 and --gpus-per-node 0; else one GPU per task
    cpus_per_task: Optional[int] = None  # --cpus-per-task; unset: the template's (8)
    template: Optional[str] = None  # default jobs/slurm.sh
    extra_args: tuple = ()  # more sbatch arguments, passed as given


@dataclass(frozen=True)
class Sweep:
    name: str
    mode: str  # strong: fixed global batch; weak: fixed per-rank batch
    ranks: tuple  # total ranks of each point
    ranks_per_node: int
    config: str  # preset name, or an absolute path to a config YAML
    batch_size: int  # global (strong) or per-rank (weak)
    epochs: int
    repeats: int = 1
    train_args: tuple = ()
    results_dir: str = ""
    launcher: str = "torchrun"  # for `local`
    cores_per_rank: Optional[int] = None  # for `local` with mpiexec: bind each rank to N cores
    pbs: PbsSettings = field(default_factory=PbsSettings)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    source: str = ""


@dataclass(frozen=True)
class PlannedRun:
    index: int
    ranks: int
    nodes: int
    ranks_per_node: int
    global_batch: int
    per_rank_batch: float
    batch_mode: str
    repeat: int
    train_args: tuple  # what TRAIN_ARGS carries: the batch flags, then the sweep's extra args

    @property
    def label(self) -> str:
        return f"n{self.nodes}-r{self.ranks}-rep{self.repeat}"


TOP_KEYS = ("name", "mode", "ranks", "nodes", "ranks_per_node", "config", "batch_size",
            "epochs", "repeats", "train_args", "results_dir", "local", "pbs", "slurm")
PBS_KEYS = tuple(PbsSettings.__dataclass_fields__)
SLURM_KEYS = tuple(SlurmSettings.__dataclass_fields__)
LOCAL_KEYS = ("launcher", "cores_per_rank")


def _check_keys(mapping: dict, allowed: Iterable[str], where: str) -> None:
    allowed = list(allowed)
    for key in mapping:
        if not isinstance(key, str) or key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = (f"; did you mean {close[0]!r}?" if close
                    else f"; valid keys: {', '.join(allowed)}")
            raise UsageError(f"unknown key {key!r} in {where}{hint}")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


def _int_list(value: Any, name: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{name} must be a non-empty list of positive integers, got {value!r}")
    items = tuple(_positive_int(v, f"each entry of {name}") for v in value)
    if len(set(items)) != len(items):
        raise UsageError(f"{name} lists a value twice: {list(items)}; use repeats to run a "
                         f"point more than once")
    return tuple(sorted(items))


def _optional_str(value: Any, name: str) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        hint = (" (YAML reads an unquoted 1:00:00 as a number: write it in quotes, "
                "\"1:00:00\")") if isinstance(value, int) else ""
        raise UsageError(f"{name} must be a string, got {type(value).__name__} {value!r}{hint}")
    return value.strip() or None


def _args(value: Any, name: str) -> tuple:
    """A string (split like a shell would) or a list of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and
                                       not isinstance(v, bool) for v in value):
        return tuple(str(v) for v in value)
    raise UsageError(f"{name} must be a string or a list of strings, got {value!r}")


def _resolve_config(name: str, sweep_dir: Path) -> str:
    """A preset stays a name (the job resolves it); a file becomes an absolute path, looked
    up relative to the working directory, then to the sweep file's folder."""
    looks_like_path = name.endswith((".yaml", ".yml")) or os.sep in name
    if looks_like_path:
        for base in (Path.cwd(), sweep_dir):
            candidate = (base / Path(name).expanduser())
            if candidate.is_file():
                return str(candidate.resolve())
    run_config.resolve_config_path(name)  # raises with the list of presets or the bad path
    return name


def resolve_sweep_path(name_or_path: str) -> Path:
    """A path to a sweep YAML, or the name of one shipped in mnist_hpc/sweeps/."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = SWEEPS_DIR / f"{name_or_path}.yaml"
    if os.sep not in name_or_path and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))
    raise UsageError(f"sweep file {name_or_path!r} does not exist; give a path or one of the "
                     f"shipped sweeps: {names}")


def load_sweep(name_or_path: str, results_dir: Optional[str] = None) -> Sweep:
    """Read and validate a sweep YAML. Every problem is a UsageError naming the fix."""
    path = resolve_sweep_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"YAML syntax error in {path}{where}: "
                         f"{getattr(exc, 'problem', None) or exc}; fix the file")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read sweep file {path}: {exc}")
    if not isinstance(data, dict):
        raise UsageError(f"sweep file {path} must hold a mapping of keys to values")
    where = str(path)
    _check_keys(data, TOP_KEYS, where)
    for section, keys in (("pbs", PBS_KEYS), ("slurm", SLURM_KEYS), ("local", LOCAL_KEYS)):
        if data.get(section) is None:
            data[section] = {}
        if not isinstance(data[section], dict):
            raise UsageError(f"{section} in {where} must be a mapping, got {data[section]!r}")
        _check_keys(data[section], keys, f"the {section} section of {where}")

    mode = data.get("mode")
    if mode not in MODES:
        raise UsageError(f"mode must be strong or weak in {where}, got {mode!r}")
    if ("ranks" in data) == ("nodes" in data):
        raise UsageError(f"give exactly one of ranks (total ranks per point) or nodes "
                         f"(nodes per point, with ranks_per_node) in {where}")
    if "nodes" in data:
        if "ranks_per_node" not in data:
            raise UsageError(f"nodes needs ranks_per_node (ranks on each node) in {where}")
        per_node = _positive_int(data["ranks_per_node"], "ranks_per_node")
        ranks = tuple(n * per_node for n in _int_list(data["nodes"], "nodes"))
    else:
        ranks = _int_list(data["ranks"], "ranks")
        per_node = _positive_int(data.get("ranks_per_node", max(ranks)), "ranks_per_node")
        for r in ranks:
            if r > per_node and r % per_node:
                raise UsageError(f"{r} ranks do not fill whole nodes of {per_node} ranks; "
                                 f"use multiples of ranks_per_node ({per_node}) above it")

    name = _optional_str(data.get("name"), "name") or path.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"name {name!r} may hold only letters, digits, '.', '_', '-'")
    config_name = _optional_str(data.get("config"), "config") or "default"
    config_name = _resolve_config(config_name, path.parent)
    base = run_config.make_config(run_config.load_yaml(run_config.resolve_config_path(config_name)),
                                  source=config_name)
    batch = _positive_int(data.get("batch_size", base.batch_size), "batch_size")
    epochs = _positive_int(data.get("epochs", base.epochs), "epochs")
    repeats = _positive_int(data.get("repeats", 1), "repeats")
    train_args = _args(data.get("train_args"), "train_args")
    for arg in train_args:
        flag = arg.split("=", 1)[0]
        if flag in RESERVED_FLAGS:
            raise UsageError(f"train_args may not contain {flag}: the sweep sets it "
                             f"(use the sweep key {RESERVED_FLAGS[flag]})")
    if mode == "strong" and batch < max(ranks):
        raise UsageError(f"strong scaling splits the global batch {batch} over up to "
                         f"{max(ranks)} ranks: raise batch_size to at least {max(ranks)}")
    # the trainer's own parser checks the extra flags and their values, as a job would
    run_config.parse_args(["--config", config_name, "--epochs", str(epochs),
                           "--batch-size", str(batch), *train_args])

    launcher = data["local"].get("launcher", "torchrun")
    if launcher not in LAUNCHERS:
        raise UsageError(f"local.launcher must be torchrun or mpiexec, got {launcher!r}")
    cores = data["local"].get("cores_per_rank")
    if cores is not None:
        cores = _positive_int(cores, "local.cores_per_rank")
    pbs_data, slurm_data = data["pbs"], data["slurm"]
    pbs = PbsSettings(
        queue=_queue_setting(pbs_data.get("queue")),
        walltime=_optional_str(pbs_data.get("walltime"), "pbs.walltime"),
        account=_optional_str(pbs_data.get("account"), "pbs.account"),
        system=_optional_str(pbs_data.get("system"), "pbs.system") or "polaris",
        filesystems=_optional_str(pbs_data.get("filesystems"), "pbs.filesystems"),
        template=_optional_str(pbs_data.get("template"), "pbs.template"),
        extra_args=_args(pbs_data.get("extra_args"), "pbs.extra_args"))
    cpu_only = slurm_data.get("cpu_only", False)
    if not isinstance(cpu_only, bool):
        raise UsageError(f"slurm.cpu_only must be true or false, got {cpu_only!r}")
    cpus_per_task = slurm_data.get("cpus_per_task")
    slurm = SlurmSettings(
        partition=_optional_str(slurm_data.get("partition"), "slurm.partition"),
        time=_optional_str(slurm_data.get("time"), "slurm.time"),
        account=_optional_str(slurm_data.get("account"), "slurm.account"),
        cpu_only=cpu_only,
        cpus_per_task=None if cpus_per_task is None else _positive_int(cpus_per_task,
                                                                       "slurm.cpus_per_task"),
        template=_optional_str(slurm_data.get("template"), "slurm.template"),
        extra_args=_args(slurm_data.get("extra_args"), "slurm.extra_args"))
    root = results_dir or _optional_str(data.get("results_dir"), "results_dir") or base.results_dir
    return Sweep(name=name, mode=mode, ranks=ranks, ranks_per_node=per_node,
                 config=config_name, batch_size=batch, epochs=epochs, repeats=repeats,
                 train_args=train_args, results_dir=str(Path(root).expanduser().resolve()),
                 launcher=launcher, cores_per_rank=cores, pbs=pbs, slurm=slurm, source=str(path))


def _node_range(text: Any, queue: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not match:
        raise UsageError(f"pbs.queue: the node range of {queue} must be N or LO-HI, got {text!r}")
    low = int(match.group(1))
    return low, int(match.group(2) or low)


def _queue_setting(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return {str(q): _node_range(r, str(q)) for q, r in value.items()}
    raise UsageError(f"pbs.queue must be a queue name or a mapping of queue to node range "
                     f"(e.g. {{preemptable: 1-8, prod: 16-64}}), got {value!r}")


def plan(sweep: Sweep) -> list[PlannedRun]:
    """One run per point and repeat; repeats outermost, so drift over time spreads evenly."""
    runs = []
    for repeat in range(sweep.repeats):
        for ranks in sweep.ranks:
            nodes = max(1, math.ceil(ranks / sweep.ranks_per_node))
            if sweep.mode == "strong":
                global_batch, per_rank, mode = sweep.batch_size, sweep.batch_size / ranks, "global"
            else:
                global_batch, per_rank, mode = sweep.batch_size * ranks, float(sweep.batch_size), \
                    "per-rank"
            args = ("--batch-size", str(sweep.batch_size), "--batch-mode", mode, *sweep.train_args)
            runs.append(PlannedRun(len(runs), ranks, nodes, ranks // nodes, global_batch,
                                   per_rank, mode, repeat, args))
    return runs


# --- scheduler commands and their rules --------------------------------------------------

def parse_walltime(text: str) -> int:
    """PBS walltime H:MM:SS -> seconds; anything else is a UsageError."""
    match = re.fullmatch(r"(\d+):([0-5]\d):([0-5]\d)", text or "")
    if not match:
        raise UsageError(f"walltime {text!r} is not H:MM:SS (e.g. 0:30:00)")
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


SLURM_TIME = re.compile(r"\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+(:\d{1,2}(:\d{1,2})?)?")


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
    if sweep.slurm.time is not None and not SLURM_TIME.fullmatch(sweep.slurm.time):
        problems.append(f"slurm.time {sweep.slurm.time!r} is not a Slurm time (MM, MM:SS, "
                        f"H:MM:SS, D-H, D-H:MM or D-H:MM:SS)")
    return problems


def slurm_test_only(sweep: Sweep, runs: list[PlannedRun], study_dir: Path, study_id: str,
                    account: Optional[str]) -> list[str]:
    """``sbatch --test-only`` for each run: Slurm's own verdict, nothing submitted."""
    problems = []
    for run in runs:
        command = slurm_command(sweep, run, study_dir, study_id, account, test_only=True)
        out = subprocess.run(command, capture_output=True, text=True, cwd=run_config.REPO_DIR)
        if out.returncode != 0:
            message = " ".join((out.stderr or out.stdout).split()) or f"exit {out.returncode}"
            problems.append(f"run {run.label}: sbatch --test-only refused it: {message}")
    return problems


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --- the study manifest ------------------------------------------------------------------

def study_id_for(sweep: Sweep, given: Optional[str]) -> str:
    """The given id (checked: it becomes a folder name), else name-time-random."""
    if given is None:
        return f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", given):
        raise UsageError(f"--study-id {given!r} may hold only letters, digits, '.', '_', '-'")
    return given


def create_study(sweep: Sweep, runs: list[PlannedRun], study_id: str, target: str) -> Path:
    """Make the study folder (never reusing one) and write the manifest of planned runs."""
    study_dir = Path(sweep.results_dir) / study_id
    try:
        study_dir.parent.mkdir(parents=True, exist_ok=True)
        study_dir.mkdir()
    except FileExistsError:
        raise UsageError(f"study folder {study_dir} exists already; pick another --study-id")
    except OSError as exc:
        raise UsageError(f"cannot create study folder {study_dir} ({exc.strerror}); "
                         f"pass --results-dir with a folder you can write to")
    manifest = {
        "schema": 1, "study_id": study_id, "target": target, "mode": sweep.mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sweep": asdict(sweep),
        "runs": [{**asdict(run), "label": run.label, "run_id": None, "job_id": None,
                  "command": None, "state": "planned"} for run in runs],
    }
    write_json(study_dir / MANIFEST, manifest)
    return study_dir


def read_manifest(study_dir: Path) -> Optional[dict]:
    path = study_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}")


# --- subcommands ---------------------------------------------------------------------------

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
              _batch(r.per_rank_batch), r.batch_mode, " ".join(r.train_args)) for r in runs]
    print(_text_table(rows))
    return EXIT_OK


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
        if shutil.which("sbatch") and not args.no_test_only:
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
              f"run from {run_config.REPO_DIR}:")
        print(shlex.join(["cd", str(run_config.REPO_DIR)]))
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
        out = subprocess.run(command, capture_output=True, text=True, cwd=run_config.REPO_DIR)
        job_id = _job_id(out.stdout) if out.returncode == 0 else None
        if job_id is None:
            entry["state"] = "submit-failed"
            entry["error"] = " ".join((out.stderr + out.stdout).split())[:500]
            write_json(study_dir / MANIFEST, manifest)
            submitted = [e["job_id"] for e in manifest["runs"] if e["job_id"]]
            print(f"error: {tool} failed for run {entry['label']} (exit {out.returncode}): "
                  f"{entry['error']}; submitted before it: {', '.join(submitted) or 'none'} "
                  f"(see {study_dir / MANIFEST})", file=sys.stderr)
            return EXIT_FAILURE
        entry["job_id"], entry["state"] = job_id, "submitted"
        write_json(study_dir / MANIFEST, manifest)
        print(f"  {entry['label']}: job {job_id}")
    print(f"When the jobs have finished: python -m mnist_hpc.scaling report {study_dir}")
    return EXIT_OK


def _job_id(stdout: str) -> Optional[str]:
    """qsub prints ``123.server``; sbatch --parsable prints ``123`` or ``123;cluster``."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    job = lines[-1].split(";")[0]
    return job if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\[\]-]*", job) else None


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
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", str(run.ranks), "-m", "mnist_hpc.train"]
    else:
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
        prefix += [sys.executable, "-m", "mnist_hpc.train"]
    return [*prefix, "--config", sweep.config, "--epochs", str(sweep.epochs), *run.train_args,
            "--results-dir", str(study_dir), "--run-id", run_id]


def _child_environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in LAUNCHER_NAMES and not k.startswith(LAUNCHER_PREFIXES)}
    env["PYTHONPATH"] = str(run_config.REPO_DIR) + os.pathsep + env.get("PYTHONPATH", "")
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
    manifest = read_manifest(study_dir)
    logs = study_dir / "logs"
    logs.mkdir()
    print(f"Study {study_id}: {len(runs)} runs here with {launcher}; results in {study_dir}",
          flush=True)
    failures = 0
    for entry, run, command in zip(manifest["runs"], runs, commands):
        entry.update(command=command, run_id=run.label, state="running")
        write_json(study_dir / MANIFEST, manifest)
        print(f"== {run.label}: {shlex.join(command)}", flush=True)
        started = time.perf_counter()
        with open(logs / f"{run.label}.log", "w") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=_child_environment(),
                                       cwd=run_config.REPO_DIR)
            for line in process.stdout:
                log.write(line)
                sys.stdout.write(line)
                sys.stdout.flush()
            code = process.wait()
        entry.update(state="exited", exit_code=code,
                     elapsed_s=round(time.perf_counter() - started, 3))
        write_json(study_dir / MANIFEST, manifest)
        if code != 0:
            failures += 1
            print(f"== {run.label} failed with exit {code} (log: {logs / run.label}.log)",
                  file=sys.stderr, flush=True)
    print(f"Done: {len(runs) - failures} of {len(runs)} runs exited 0. Report: "
          f"python -m mnist_hpc.scaling report {study_dir}")
    return EXIT_FAILURE if failures else EXIT_OK


# --- gathering run directories -----------------------------------------------------------

@dataclass
class RunRecord:
    """One run as the report sees it: measured numbers, or why there are none."""

    label: str
    status: str  # completed | failed | preempted | running | missing | unreadable
    run_dir: Optional[Path] = None
    job_id: Optional[str] = None
    ranks: Optional[int] = None
    nodes: Optional[int] = None
    global_batch: Optional[int] = None
    per_rank_batch: Optional[float] = None
    steps_per_epoch: Optional[int] = None
    samples_per_s: Optional[float] = None
    epoch_s: Optional[float] = None
    comm_s: Optional[float] = None
    measured_epochs: int = 0
    val_acc: Optional[float] = None
    test_acc: Optional[float] = None
    parameters: Optional[int] = None
    cpu_threads: Optional[int] = None
    detail: str = ""
    metrics: dict = field(default_factory=dict)


def measure(metrics: dict) -> dict:
    """Throughput over the epochs after the first (warm-up) when there are two or more."""
    epochs = metrics.get("epochs") or []
    measured = epochs[1:] if len(epochs) >= 2 else epochs
    if not measured:
        return {}
    train_s = sum(e["train_s"] for e in measured)
    samples = sum(e.get("train_samples") or e["train_samples_per_s"] * e["train_s"]
                  for e in measured)
    comm = [e.get("comm_s") for e in measured]
    return {"samples_per_s": samples / train_s, "epoch_s": train_s / len(measured),
            "comm_s": (sum(comm) / len(comm)) if all(c is not None for c in comm) else None,
            "measured_epochs": len(measured)}


def _record(label: str, run_dir: Path, job_id: Optional[str]) -> RunRecord:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return RunRecord(label, "unreadable", run_dir, job_id, detail=f"metrics.json: {exc}")
    world, batch = metrics.get("world", {}), metrics.get("batch", {})
    final = metrics.get("final", {})
    record = RunRecord(
        label, metrics.get("status", "unknown"), run_dir, job_id or world.get("job_id"),
        ranks=world.get("world_size"), nodes=world.get("nodes"),
        global_batch=batch.get("global"), per_rank_batch=batch.get("per_rank"),
        steps_per_epoch=batch.get("steps_per_epoch"), val_acc=final.get("val_acc"),
        test_acc=final.get("test_acc"), parameters=(metrics.get("model") or {}).get("parameters"),
        cpu_threads=world.get("cpu_threads") if str(world.get("device")) == "cpu" else None,
        detail=metrics.get("error", ""), metrics=metrics)
    for key, value in measure(metrics).items():
        setattr(record, key, value)
    if record.status == "completed" and record.samples_per_s is None:
        record.status, record.detail = "incomplete", "completed without epoch records"
    return record


def gather(study_dir: Path) -> tuple[Optional[dict], list[RunRecord]]:
    """Every run of the study: those in the manifest (found by run id or job id, or listed as
    missing) and any other run directory in the folder."""
    if not study_dir.is_dir():
        raise UsageError(f"study folder {study_dir} does not exist")
    manifest = read_manifest(study_dir)
    run_dirs = {p.name: p for p in study_dir.iterdir()
                if p.is_dir() and (p / "metrics.json").exists()}
    by_job: dict[str, Path] = {}
    for path in run_dirs.values():
        try:
            job = json.loads((path / "metrics.json").read_text()).get("world", {}).get("job_id")
        except (OSError, json.JSONDecodeError):
            continue
        if job:
            by_job[str(job)] = by_job.get(str(job)) or path
    records, used = [], set()
    for entry in (manifest or {}).get("runs", []):
        label, job = entry.get("label") or str(entry.get("index")), entry.get("job_id")
        found = run_dirs.get(entry.get("run_id") or "")
        if found is None and job:
            short = job.split(".")[0]
            for candidate in (f"pbs-{job}", f"slurm-{job}", f"pbs-{short}", f"slurm-{short}"):
                found = found or run_dirs.get(candidate)
            found = found or by_job.get(job) or by_job.get(short)
        if found is None:
            if entry.get("state") == "submit-failed":
                why = f"submission failed: {entry.get('error', '')}"
            elif entry.get("state") == "planned":
                why = "never submitted"
            elif entry.get("exit_code") not in (None, 0):
                why = f"exited {entry['exit_code']} before writing a run directory"
            elif job:
                why = f"job {job}: no run directory (queued, still starting, or never ran)"
            else:
                why = "no run directory"
            records.append(RunRecord(label, "missing", None, job, ranks=entry.get("ranks"),
                                     nodes=entry.get("nodes"), detail=why))
            continue
        used.add(found.name)
        record = _record(label, found, job)
        if record.status == "running" and entry.get("exit_code") not in (None, 0):
            record.status = "failed"
            record.detail = record.detail or f"exited {entry['exit_code']}"
        records.append(record)
    for name in sorted(set(run_dirs) - used):
        records.append(_record(name, run_dirs[name], None))
    for record in records:
        if record.status != "completed":
            logs = [study_dir / "logs" / f"{record.label}.log"]
            if record.job_id:
                logs.append(study_dir / f"slurm-{record.job_id.split('.')[0]}.out")
            found = next((log for log in logs if log.is_file()), None)
            if found:
                record.detail += f" (log: {found})"
    return manifest, records


# --- aggregation, tables, plots ------------------------------------------------------------

@dataclass
class Row:
    ranks: int
    nodes: int
    global_batch: int
    per_rank_batch: float
    runs: int
    samples_per_s: float  # median over repeats
    samples_per_s_min: float
    samples_per_s_max: float
    epoch_s: float
    epoch_s_min: float
    epoch_s_max: float
    step_ms: Optional[float]
    comm_s: Optional[float]
    cpu_threads: Optional[int]  # per rank, CPU runs only: explains CPU speedups
    val_acc: Optional[float]
    test_acc: Optional[float]
    run_ids: list
    speedup: float = 1.0
    efficiency: float = 1.0

    @property
    def samples_per_s_per_rank(self) -> float:
        return self.samples_per_s / self.ranks

    @property
    def comm_fraction(self) -> Optional[float]:
        return None if self.comm_s is None else self.comm_s / self.epoch_s


CSV_COLUMNS = ("ranks", "nodes", "global_batch", "per_rank_batch", "runs", "samples_per_s",
               "samples_per_s_min", "samples_per_s_max", "samples_per_s_per_rank", "epoch_s",
               "epoch_s_min", "epoch_s_max", "step_ms", "comm_s", "comm_fraction", "speedup",
               "efficiency", "val_acc", "test_acc", "cpu_threads", "run_ids")


def _median(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(records: list[RunRecord]) -> list[Row]:
    """Completed runs grouped by (ranks, nodes, global batch); speedup and efficiency against
    the group with the fewest ranks (then fewest nodes)."""
    groups: dict[tuple, list[RunRecord]] = {}
    for record in records:
        if record.status == "completed":
            key = (record.ranks, record.nodes, record.global_batch)
            groups.setdefault(key, []).append(record)
    rows = []
    for (ranks, nodes, global_batch), members in sorted(groups.items()):
        throughput = [m.samples_per_s for m in members]
        epoch = [m.epoch_s for m in members]
        steps = members[0].steps_per_epoch
        epoch_median = statistics.median(epoch)
        comms = [m.comm_s for m in members]
        rows.append(Row(
            ranks=ranks, nodes=nodes, global_batch=global_batch,
            per_rank_batch=members[0].per_rank_batch, runs=len(members),
            samples_per_s=statistics.median(throughput), samples_per_s_min=min(throughput),
            samples_per_s_max=max(throughput), epoch_s=epoch_median, epoch_s_min=min(epoch),
            epoch_s_max=max(epoch), step_ms=1000 * epoch_median / steps if steps else None,
            comm_s=_median(comms) if all(c is not None for c in comms) else None,
            cpu_threads=members[0].cpu_threads,
            val_acc=_median([m.val_acc for m in members]),
            test_acc=_median([m.test_acc for m in members]),
            run_ids=[m.run_dir.name for m in members]))
    if rows:
        base = rows[0]  # sorted: fewest ranks, then fewest nodes
        for row in rows:
            row.speedup = row.samples_per_s / base.samples_per_s
            row.efficiency = row.speedup / (row.ranks / base.ranks)
    return rows


def write_csv(path: Path, rows: list[Row]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        values = []
        for column in CSV_COLUMNS:
            value = getattr(row, column)
            if column == "run_ids":
                value = " ".join(value)
            values.append("" if value is None else
                          repr(value) if isinstance(value, float) else value)
        writer.writerow(values)
    atomic_write(path, buffer.getvalue())


def _fmt(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _batch(value: Optional[float]) -> str:
    """Batches are whole numbers except a strong-scaling share that does not divide evenly."""
    if value is None:
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _text_table(rows: list[tuple]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # batch jobs and login nodes have no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, buffer.getvalue())


def write_plots(out: Path, rows: list[Row], title: str,
                predicted: Optional[list[dict]] = None) -> list[str]:
    plt = _plt()
    ranks = [r.ranks for r in rows]
    base = rows[0]
    names = []

    model_x = sorted(set(ranks + [p["ranks"] for p in predicted or []]))

    def axis(ax, ylabel: str, ticks: list) -> None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.get_xaxis().set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("ranks")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.set_title(title, fontsize=9)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    median = [r.samples_per_s for r in rows]
    spread = [[r.samples_per_s - r.samples_per_s_min for r in rows],
              [r.samples_per_s_max - r.samples_per_s for r in rows]]
    ax.errorbar(ranks, median, yerr=spread, marker="o", capsize=3,
                label="measured (median, min–max)")
    ax.plot(model_x, [base.samples_per_s * x / base.ranks for x in model_x], "k--", lw=1,
            label="ideal (linear)")
    if predicted:
        ax.plot([p["ranks"] for p in predicted], [p["samples_per_s"] for p in predicted],
                ":", marker=".", label="model")
    ys = median + [base.samples_per_s * x / base.ranks for x in model_x]
    if max(ys) / min(ys) > 8:  # many doublings: log axes show each one the same size
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.matplotlib.ticker.FuncFormatter(
            lambda value, _: f"{value:,.0f}"))
        ax.yaxis.set_minor_formatter(plt.matplotlib.ticker.NullFormatter())
    else:
        ax.set_ylim(bottom=0)
    axis(ax, "training samples/s", model_x)
    ax.legend(fontsize=8)
    _save(fig, out / "throughput.png")
    plt.close(fig)
    names.append("throughput.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(ranks, [r.efficiency for r in rows], marker="o", label="measured")
    if predicted:
        ax.plot([p["ranks"] for p in predicted], [p["efficiency"] for p in predicted], ":",
                marker=".", label="model")
    ax.axhline(1.0, color="k", ls="--", lw=1, label="ideal")
    ax.set_ylim(0, max(1.1, max(r.efficiency for r in rows) * 1.1))
    axis(ax, f"parallel efficiency (vs {base.ranks} rank{'s' * (base.ranks > 1)})", model_x)
    ax.legend(fontsize=8)
    _save(fig, out / "efficiency.png")
    plt.close(fig)
    names.append("efficiency.png")

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(ranks, [r.epoch_s for r in rows],
                yerr=[[r.epoch_s - r.epoch_s_min for r in rows],
                      [r.epoch_s_max - r.epoch_s for r in rows]],
                marker="o", capsize=3, label="training time per epoch")
    comm = [(r.ranks, r.comm_s) for r in rows if r.comm_s is not None and r.ranks > 1]
    if comm:
        ax.plot(*zip(*comm), marker="s", label="all-reduce in flight (gloo)")
    axis(ax, "seconds per epoch", ranks)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    _save(fig, out / "epoch_time.png")
    plt.close(fig)
    names.append("epoch_time.png")
    return names


# --- the performance model -----------------------------------------------------------------

GRADIENT_BYTES_PER_PARAM = 4  # DDP all-reduces fp32 gradients (bf16 autocast keeps fp32 params)


def allreduce_s(ranks: int, nbytes: float, bandwidth_gbs: float, latency_us: float) -> float:
    """Ring all-reduce: 2(n-1)/n of the bytes cross each link, in 2(n-1) latency-bound steps."""
    if ranks <= 1:
        return 0.0
    return (2 * (ranks - 1) / ranks * nbytes / (bandwidth_gbs * 1e9)
            + 2 * (ranks - 1) * latency_us * 1e-6)


def predict(ranks_list: Iterable[int], mode: str, batch: int, compute_s_per_sample: float,
            nbytes: float, bandwidth_gbs: float, latency_us: float,
            base_ranks: int) -> list[dict]:
    """Step time = per-rank compute (proportional to the per-rank batch) + ring all-reduce,
    with no overlap of the two (an upper bound on the step: DDP overlaps some of it).

    ``batch`` is the global batch (strong) or the per-rank batch (weak); speedup and
    efficiency are against the model's own ``base_ranks`` point."""

    def point(n: int) -> dict:
        per_rank = batch / n if mode == "strong" else float(batch)
        global_batch = batch if mode == "strong" else batch * n
        compute = compute_s_per_sample * per_rank
        comm = allreduce_s(n, nbytes, bandwidth_gbs, latency_us)
        return {"ranks": n, "per_rank_batch": per_rank, "compute_ms": 1000 * compute,
                "allreduce_ms": 1000 * comm, "step_ms": 1000 * (compute + comm),
                "samples_per_s": global_batch / (compute + comm)}

    base = point(base_ranks)["samples_per_s"]
    out = []
    for n in sorted(set(ranks_list)):
        p = point(n)
        p["speedup"] = p["samples_per_s"] / base
        p["efficiency"] = p["speedup"] / (n / base_ranks)
        out.append(p)
    return out


def parse_network(text: str) -> tuple[float, float]:
    try:
        bandwidth, latency = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--model {text!r}: give GB_PER_S,LATENCY_US, e.g. 25,10 "
                         f"(Slingshot) or 1.25,50 (10 GbE)")
    if bandwidth <= 0 or latency < 0:
        raise UsageError(f"--model {text!r}: bandwidth must be > 0 and latency >= 0")
    return bandwidth, latency


def model_ranks(measured: list[int]) -> list[int]:
    """The measured points, then doublings up to 1024 ranks, to show where scaling flattens."""
    top = max(measured)
    extra, n = [], 1
    while n <= 1024:
        if n > top:
            extra.append(n)
        n *= 2
    return sorted(set(measured) | set(extra))


def model_markdown(rows: list[dict], bandwidth: float, latency: float, nbytes: float) -> str:
    header = ["ranks", "per-rank batch", "compute ms", "all-reduce ms", "step ms",
              "samples/s", "speedup", "efficiency"]
    body = [[str(p["ranks"]), _batch(p["per_rank_batch"]), _fmt(p["compute_ms"], 3),
             _fmt(p["allreduce_ms"], 3), _fmt(p["step_ms"], 3), _fmt(p["samples_per_s"], 0),
             f"{p['speedup']:.2f}", f"{p['efficiency']:.2f}"] for p in rows]
    return (f"Network: {bandwidth:g} GB/s per link, {latency:g} µs per hop; gradients "
            f"{nbytes / 1e6:.2f} MB per step.\n\n" + _md_table(header, body))


# --- report --------------------------------------------------------------------------------

def cmd_report(args: argparse.Namespace) -> int:
    study_dir = Path(args.study_dir).expanduser().resolve()
    manifest, records = gather(study_dir)
    if not records:
        raise UsageError(f"{study_dir} holds no run directories and no {MANIFEST}; give the "
                         f"folder a study wrote (<results_dir>/<study_id>)")
    out = Path(args.out).expanduser().resolve() if args.out else study_dir
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(records)
    mode = (manifest or {}).get("mode") or _guess_mode(records)
    network = parse_network(args.model) if args.model else None
    completed = [r for r in records if r.status == "completed"]
    problems = [r for r in records if r.status != "completed"]
    title = f"{(manifest or {}).get('study_id', study_dir.name)} ({mode} scaling)"

    predicted, model_text = None, ""
    if rows and network:
        predicted, model_text = _model_for(rows, records, mode, network)
    write_csv(out / "scaling.csv", rows)
    plots = write_plots(out, rows, title, predicted) if rows else []
    md = _report_markdown(study_dir, manifest, mode, records, rows, problems, plots, model_text)
    atomic_write(out / "scaling.md", md)
    print(md)
    print(f"Wrote {out / 'scaling.csv'}, {out / 'scaling.md'}"
          + "".join(f", {out / p}" for p in plots))
    if not completed:
        print("error: no completed run to report on", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _guess_mode(records: list[RunRecord]) -> str:
    modes = {(r.metrics.get("batch") or {}).get("mode") for r in records if r.metrics}
    return "weak" if modes == {"per-rank"} else "strong"


def _model_for(rows: list[Row], records: list[RunRecord], mode: str,
               network: tuple[float, float]) -> tuple[list[dict], str]:
    base = rows[0]
    steps = base.step_ms / 1000 if base.step_ms else None
    params = next((r.parameters for r in records if r.parameters), None)
    if steps is None or params is None:
        return None, "_Model skipped: the runs do not record steps per epoch or parameters._"
    comm_per_step = (base.comm_s / (base.epoch_s / steps)) if base.comm_s and base.ranks > 1 else 0
    compute = max(steps - comm_per_step, 1e-12)
    per_sample = compute / base.per_rank_batch
    nbytes = params * GRADIENT_BYTES_PER_PARAM
    batch = base.global_batch if mode == "strong" else int(round(base.per_rank_batch))
    ranks = [n for n in model_ranks([r.ranks for r in rows]) if mode == "weak" or n <= batch]
    predicted = predict(ranks, mode, batch, per_sample, nbytes, *network, base.ranks)
    text = (f"Compute per step from the {base.ranks}-rank run: {1000 * compute:.3f} ms for "
            f"{_batch(base.per_rank_batch)} samples per rank, assumed proportional to the "
            f"per-rank batch.\n" + model_markdown(predicted, *network, nbytes))
    return predicted, text


def _report_markdown(study_dir: Path, manifest: Optional[dict], mode: str,
                     records: list[RunRecord], rows: list[Row], problems: list[RunRecord],
                     plots: list[str], model_text: str) -> str:
    completed = [r for r in records if r.status == "completed"]
    versions = completed[0].metrics.get("versions", {}) if completed else {}
    epochs = [len(r.metrics.get("epochs") or []) for r in completed]
    measured = sorted({r.measured_epochs for r in completed})

    def seen(key: str) -> str:
        values = {str(r.metrics.get("world", {}).get(key)) for r in completed
                  if r.metrics.get("world", {}).get(key) is not None}
        return ", ".join(sorted(values)) or "–"

    hosts = sorted({host for r in completed
                    for host in r.metrics.get("world", {}).get("hostnames") or []})
    lines = [f"# Scaling report: {(manifest or {}).get('study_id', study_dir.name)}", ""]
    batch_rule = ("strong scaling: the global batch is fixed and split over the ranks"
                  if mode == "strong" else
                  "weak scaling: the per-rank batch is fixed, the global batch grows with the "
                  "ranks")
    lines += [f"- Mode: {batch_rule}.",
              f"- Runs: {len(completed)} completed of {len(records)}"
              + (f" ({len(problems)} failed or incomplete, listed below)" if problems else "")
              + ".",
              f"- Hardware: device {seen('device')}"
              + (f" ({seen('device_name')})" if seen("device_name") != "–" else "")
              + f"; backend {seen('backend')} (none for 1 rank); launcher {seen('launcher')}; "
              f"{len(hosts)} host(s): {', '.join(hosts[:8])}{' ...' if len(hosts) > 8 else ''}.",
              f"- Software: torch {versions.get('torch', '?')}, mnist_hpc "
              f"{versions.get('mnist_hpc', '?')}, commit {str(versions.get('git_commit'))[:12]}.",
              ""]
    if epochs:
        warm = ("the first epoch of each run is excluded as warm-up; throughput and epoch time "
                f"are over the remaining {', '.join(map(str, measured))} epoch(s)"
                if max(epochs) >= 2 else
                "each run trained one epoch, so the throughput includes the first (warm-up) "
                "steps")
        lines += [f"Training samples/s = training samples / training time, measured by the "
                  f"trainer with the device synchronised; {warm}. Evaluation is not timed here. "
                  f"Speedup = samples/s ÷ samples/s of the {rows[0].ranks}-rank run; "
                  f"efficiency = speedup ÷ (ranks ÷ {rows[0].ranks}) (for weak scaling this is "
                  f"the same as step-time(base) ÷ step-time(n)). Repeats: median, with the "
                  f"min–max spread. Comm = seconds per epoch during which a gradient all-reduce "
                  f"was in flight (gloo only; it overlaps the backward pass, so it bounds the "
                  f"cost from above).", ""]
    if rows:
        header = ["ranks", "nodes", "global batch", "per-rank batch", "runs", "samples/s",
                  "min–max", "per rank", "epoch s", "step ms", "comm s", "speedup",
                  "efficiency", "val acc %", "test acc %"]
        threads = any(r.cpu_threads for r in rows)
        if threads:
            header.insert(2, "threads/rank")
        body = [[str(r.ranks), str(r.nodes), str(r.global_batch), _batch(r.per_rank_batch),
                 str(r.runs), _fmt(r.samples_per_s, 0),
                 f"{_fmt(r.samples_per_s_min, 0)}–{_fmt(r.samples_per_s_max, 0)}",
                 _fmt(r.samples_per_s_per_rank, 0), _fmt(r.epoch_s, 2), _fmt(r.step_ms, 1),
                 _fmt(r.comm_s, 2), f"{r.speedup:.2f}", f"{r.efficiency:.2f}",
                 _fmt(r.val_acc, 2), _fmt(r.test_acc, 2)] for r in rows]
        if threads:
            for row, r in zip(body, rows):
                row.insert(2, str(r.cpu_threads or "–"))
        lines += [_md_table(header, body), ""]
        lines += [f"![{p}]({p})" for p in plots] + [""]
    if problems:
        lines += ["## Failed or incomplete runs", "",
                  "Not in the table above:", ""]
        for r in problems:
            where = f" ({r.run_dir.name})" if r.run_dir else ""
            job = f", job {r.job_id}" if r.job_id else ""
            size = f", {r.ranks} ranks" if r.ranks else ""
            detail = f": {r.detail}" if r.detail else ""
            lines.append(f"- {r.label}{where}{job}{size}: **{r.status}**{detail}")
        lines.append("")
    if model_text:
        lines += ["## Performance model", "",
                  "Per-step time = compute + ring all-reduce of the fp32 gradients, "
                  "2(n−1)/n × bytes ÷ bandwidth + 2(n−1) × latency, with no overlap (see "
                  "mnist_hpc/sweeps/README.md).", "", model_text, ""]
    return "\n".join(lines)


def cmd_model(args: argparse.Namespace) -> int:
    bandwidth, latency = parse_network(args.network)
    ranks = _int_list([int(x) for x in args.ranks.split(",")], "--ranks")
    nbytes = args.params * GRADIENT_BYTES_PER_PARAM
    per_sample = args.compute_ms / 1000 / args.batch  # compute_ms: one rank, --batch samples
    rows = predict(ranks, args.mode, args.batch, per_sample, nbytes, bandwidth, latency,
                   ranks[0])
    print(f"{args.mode} scaling, {args.compute_ms:g} ms compute for {args.batch} samples on "
          f"one rank. " + model_markdown(rows, bandwidth, latency, nbytes))
    return EXIT_OK


# --- CLI -----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see python -m mnist_hpc.scaling --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m mnist_hpc.scaling",
                     description="Scaling studies: plan a sweep, submit it or run it here, "
                                 "then report throughput, speedup and efficiency.",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sweep_help = "sweep YAML (a path, or a shipped one: " + ", ".join(
        sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))) + ")"

    def add_sweep(p: argparse.ArgumentParser) -> None:
        p.add_argument("sweep", help=sweep_help)
        p.add_argument("--results-dir", help="parent of the study folder (default: the "
                                             "sweep's results_dir, else the trainer's)")

    p = sub.add_parser("plan", help="list the runs of a sweep with their batches",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_sweep(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("submit", help="check the whole study, then submit one job per run",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_sweep(p)
    p.add_argument("--scheduler", choices=SCHEDULERS, required=True)
    p.add_argument("--dry-run", action="store_true",
                   help="check and print the exact commands; submit nothing")
    p.add_argument("--account", help="project to charge (overrides the sweep's)")
    p.add_argument("--study-id", help="name of the study folder (default: name-time-random)")
    p.add_argument("--no-test-only", action="store_true",
                   help="slurm: skip the sbatch --test-only check (format checks only)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("local", help="run the sweep here, one run after another",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_sweep(p)
    p.add_argument("--launcher", choices=LAUNCHERS,
                   help="how to start the ranks (default: the sweep's local.launcher, torchrun)")
    p.add_argument("--cores-per-rank", type=int,
                   help="mpiexec only: bind each rank to N cores; 0: unbound, the ranks share "
                        "the machine (default: the sweep's local.cores_per_rank)")
    p.add_argument("--study-id", help="name of the study folder (default: name-time-random)")
    p.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    p.set_defaults(func=cmd_local)

    p = sub.add_parser("report", help="tables and plots from a study folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("study_dir", help="the study folder (<results_dir>/<study_id>)")
    p.add_argument("--out", help="where to write scaling.csv/.md and plots (default: study_dir)")
    p.add_argument("--model", metavar="GB_PER_S,LATENCY_US",
                   help="add the ring all-reduce model for this network, e.g. 25,10")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("model", help="the performance model alone, from a compute time",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--compute-ms", type=float, required=True,
                   help="compute time of one training step of --batch samples on one rank")
    p.add_argument("--batch", type=int, default=512,
                   help="global batch (strong) or per-rank batch (weak)")
    p.add_argument("--mode", choices=MODES, default="strong")
    p.add_argument("--network", default="25,10", help="GB_PER_S,LATENCY_US")
    p.add_argument("--params", type=int, default=1_199_882, help="parameters all-reduced")
    p.add_argument("--ranks", default="1,2,4,8,16,32,64,128,256,512,1024")
    p.set_defaults(func=cmd_model)
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


if __name__ == "__main__":
    main_exit()
