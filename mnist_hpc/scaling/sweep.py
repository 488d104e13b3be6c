"""The sweep: a YAML file read and checked whole (every problem a UsageError naming the fix),
and the plan of runs it implies.

A sweep names the points (total ranks, or every pairing of a number of nodes with a number of
ranks per node), the batch rule (strong: fixed global batch; weak: fixed per-rank batch), the
trainer's config and extra flags, and the settings of each way to run it (``pbs``, ``slurm``,
``local``).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from ..config import flags
from ..config import options as run_config
from ..errors import UsageError
from ..files import PACKAGE_DIR, check_name, read_yaml

MODES = ("strong", "weak")
LOCAL_LAUNCHERS = ("torchrun", "mpiexec")
SWEEPS_DIR = PACKAGE_DIR / "sweeps"
# The trainer flags a sweep sets itself, and the sweep key to use instead.
RESERVED_FLAGS = {"--batch-size": "batch_size", "--batch-mode": "mode", "--epochs": "epochs",
                  "--config": "config", "--results-dir": "results_dir", "--run-id": "(none)",
                  "--resume": "(none)"}


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
    ranks: tuple  # total ranks of each point, fewest first (then fewest nodes)
    nodes: tuple  # the nodes each point spreads its ranks over, evenly
    ranks_per_node: int  # the most ranks a point puts on one node
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


def int_list(value: Any, name: str) -> tuple:
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
    flags.resolve_config_path(name)  # raises with the list of presets or the bad path
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
    data = read_yaml(path, "sweep file")
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
        per_node_counts = int_list(data["ranks_per_node"], "ranks_per_node")
        points = [(n, p) for n in int_list(data["nodes"], "nodes") for p in per_node_counts]
    else:
        ranks = int_list(data["ranks"], "ranks")
        per_node = _positive_int(data.get("ranks_per_node", max(ranks)),
                                 "ranks_per_node (a list only with nodes)")
        for r in ranks:
            if r > per_node and r % per_node:
                raise UsageError(f"{r} ranks do not fill whole nodes of {per_node} ranks; "
                                 f"use multiples of ranks_per_node ({per_node}) above it")
        points = [(max(1, math.ceil(r / per_node)), min(r, per_node)) for r in ranks]
    points.sort(key=lambda point: (point[0] * point[1], point[0]))  # (nodes, ranks per node)
    ranks = tuple(n * p for n, p in points)

    name = check_name(_optional_str(data.get("name"), "name") or path.stem, "name")
    config_name = _optional_str(data.get("config"), "config") or "default"
    config_name = _resolve_config(config_name, path.parent)
    base = run_config.make_config(
        flags.load_yaml(flags.resolve_config_path(config_name)), source=config_name)
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
    flags.parse_args(["--config", config_name, "--epochs", str(epochs),
                      "--batch-size", str(batch), *train_args])

    launcher = data["local"].get("launcher", "torchrun")
    if launcher not in LOCAL_LAUNCHERS:
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
    return Sweep(name=name, mode=mode, ranks=ranks, nodes=tuple(n for n, _ in points),
                 ranks_per_node=max(p for _, p in points),
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
        for ranks, nodes in zip(sweep.ranks, sweep.nodes):
            if sweep.mode == "strong":
                global_batch, per_rank, mode = sweep.batch_size, sweep.batch_size / ranks, "global"
            else:
                global_batch, per_rank, mode = sweep.batch_size * ranks, float(sweep.batch_size), \
                    "per-rank"
            args = ("--batch-size", str(sweep.batch_size), "--batch-mode", mode, *sweep.train_args)
            runs.append(PlannedRun(len(runs), ranks, nodes, ranks // nodes, global_batch,
                                   per_rank, mode, repeat, args))
    return runs
