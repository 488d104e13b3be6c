"""The one description of ``metrics.json``: its schema as TypedDicts, its one writer (the
trainer's) and its one reader (the scaling report, ``python -m mnist_hpc.metrics``, the job
scripts through that command, the tests).

``schema`` 1. Key names are stable because users' scripts read them; a later version of
schema 1 may add keys, so the reader accepts keys it does not know. Everything else is
checked: a missing key, a value of the wrong type or another schema version is refused with
the file and the key named (``MetricsError``, a ``ValueError``).

Torch-free (no ``from __future__ import annotations`` either: TypedDict reads ``NotRequired``
from real annotations only, on Python 3.11).
"""

import json
from pathlib import Path
from typing import Any, Literal, NotRequired, Optional, TypedDict, get_args, get_type_hints

from .. import files
from ..errors import UsageError
from .json_shape import Mismatch, check_fields, kind_name

FILENAME = "metrics.json"
SCHEMA = 1

Status = Literal["running", "completed", "failed", "preempted"]
STATUSES: tuple[str, ...] = get_args(Status)
RUNNING, COMPLETED, FAILED, PREEMPTED = STATUSES


class Model(TypedDict):
    name: str
    parameters: int
    # training FLOPs (forward + backward) per sample, counted once by rank 0
    flops_per_sample: Optional[float]


class World(TypedDict):
    world_size: int
    nodes: int  # distinct hostnames over all ranks
    local_world_size: int
    launcher: str
    backend: Optional[str]  # None: one process, no process group
    device: str
    device_name: Optional[str]  # the CUDA device's name; None on CPU
    cpu_threads: int
    hostnames: list[str]  # every rank's, in rank order
    job_id: Optional[str]
    master_addr: Optional[str]


# "global" is a Python keyword: this one is spelled in the functional form
Batch = TypedDict("Batch", {
    "global": int, "per_rank": float, "mode": str, "steps_per_epoch": int, "lr": float,
    "precision": str, "cuda_graphs": bool})


class Samples(TypedDict, total=False):
    """Counted by the all-reduce, not assumed: train and val from the first epoch on, test
    when the run completes."""

    train: int
    val: int
    test: int


class Spread(TypedDict):
    min: float
    median: float
    max: float
    std: float


class Slowest(TypedDict):
    rank: int
    host: str
    compute_s: float
    compute_over_median: float


class Straggler(TypedDict):
    rank: int
    host: str
    compute_over_median: float


class Ranks(TypedDict):
    """Per-rank timing of one epoch (mnist_hpc.observe.timing), gathered by rank 0."""

    data_s: Optional[Spread]  # each None where a rank did not measure it
    compute_s: Optional[Spread]
    comm_s: Optional[Spread]  # measured on gloo only
    eval_s: Optional[Spread]
    slowest: Slowest
    stragglers: list[Straggler]  # compute time over straggler_threshold x the median
    straggler_threshold: float
    peak_memory_bytes: int  # max over the ranks


class Epoch(TypedDict):
    epoch: int
    train_s: float
    eval_s: float
    train_samples: int
    train_samples_per_s: float
    comm_s: Optional[float]  # gradient all-reduce time on gloo; None elsewhere
    train_acc: float  # percent
    train_loss: float
    # eval: a pass over the train split after the epoch; pass: summed while training
    train_figures: NotRequired[Literal["eval", "pass"]]
    val_acc: float
    val_loss: float
    ranks: Ranks
    tflops: float  # achieved, all ranks
    mfu: Optional[float]  # None where the device's peak is unknown


class Final(TypedDict):
    test_acc: float
    test_loss: float
    val_acc: Optional[float]
    wall_s: float
    data_load_s: float
    init_process_group_s: float
    train_s: float
    warmup_s: float  # inside wall_s
    startup_s: float  # process start to the first step
    # the whole process, and what it spent besides training (all in process_s)
    process_s: NotRequired[float]  # process start to the end of the run
    imports_s: NotRequired[float]  # process start to the set-up, less init_process_group_s
    eval_s: NotRequired[float]  # every evaluation pass: the epochs' and the test split's
    write_s: NotRequired[float]  # results files: metrics, history, plots, checkpoints, model


class Resume(TypedDict):
    epoch: int
    step: int
    warnings: list[str]  # what --resume-force let through
    world_size: NotRequired[int]  # the ranks that wrote the checkpoint (any may resume it)


class Versions(TypedDict):
    python: str
    torch: str
    torchvision: Optional[str]
    mnist_hpc: str
    git_commit: Optional[str]
    cuda: Optional[str]
    platform: str
    argv: list[str]
    hostname: str


class Metrics(TypedDict):
    schema: int
    run_id: str
    status: Status
    error: NotRequired[str]  # when failed: the rank and what went wrong
    config: dict[str, Any]  # the resolved configuration (mnist_hpc.config.options)
    model: Model
    world: World
    batch: Batch
    samples: Samples
    epochs: list[Epoch]
    final: Final  # {} until the run completes
    resumed_from: list[Resume]  # where each resume picked up
    versions: Versions
    auto_check: NotRequired[dict[str, Any]]  # what auto chose, checked (step.verify.AutoCheck)


# Which of an epoch's figures are curves over the epochs (TensorBoard's ``epoch/`` scalars).
EPOCH_CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "train_samples_per_s",
                "tflops", "mfu")


def epoch_curves(record: Epoch) -> dict[str, float]:
    """The epoch's curve values that are known (``mfu`` is None without a known peak)."""
    return {key: record[key] for key in EPOCH_CURVES  # type: ignore[literal-required]
            if record.get(key) is not None}


class MetricsError(ValueError):
    """A metrics.json this version cannot read: what is wrong, and in which file."""


def write(run_dir: Path, metrics: Metrics, status: Status, error: Optional[str] = None) -> None:
    """``<run_dir>/metrics.json``: ``metrics`` with this status (and error), written
    atomically, so that a killed run never leaves a truncated file."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
    record = {**metrics, "status": status}
    if error is not None:
        record["error"] = error
    files.write_json(Path(run_dir) / FILENAME, record)


def _path(path: Path) -> Path:
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise MetricsError(f"{path} is not JSON: {exc}") from None


def read(path: Path) -> Metrics:
    """The metrics of a run (``path``: its directory or its metrics.json), checked against
    the schema. Raises OSError when there is no file to read, MetricsError when it is not a
    schema-1 metrics.json."""
    path = _path(path)
    payload = _load(path)
    if not isinstance(payload, dict):
        raise MetricsError(f"{path}: expected a JSON object, found {kind_name(payload)}")
    if "schema" not in payload:
        raise MetricsError(f"{path}: key 'schema' is missing")
    if payload["schema"] != SCHEMA:
        raise MetricsError(f"{path}: schema {payload['schema']!r}, but this version of "
                           f"mnist_hpc reads schema {SCHEMA}; read it with the version that "
                           f"wrote it")
    hints = get_type_hints(Metrics)
    if payload.get("status") != COMPLETED and payload.get("final") == {}:
        hints["final"] = dict  # not there yet
    try:
        check_fields(payload, Metrics, hints, "")
    except Mismatch as exc:
        raise MetricsError(f"{path}: {exc}") from None
    return payload  # type: ignore[return-value]


def read_for_user(path: Path) -> Metrics:
    """``read`` for a command line: a file that is missing or off the schema is a UsageError
    naming the file, the key and the fix."""
    try:
        return read(path)
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}; give a run directory "
                         f"that holds a {FILENAME}") from None
    except MetricsError as exc:
        raise UsageError(str(exc)) from None


def status(run_dir: Path) -> Optional[str]:
    """The status recorded in a run's metrics.json, or None if there is none to read. Only
    the status is checked: a completed run is recognised (and never overwritten) even when
    the rest of its file is not one this version reads."""
    try:
        payload = _load(_path(run_dir))
    except (OSError, MetricsError):
        return None
    value = payload.get("status") if isinstance(payload, dict) else None
    return value if value in STATUSES else None
