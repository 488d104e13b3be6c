"""The runs of a results directory at a glance: one row per run directory (a subdirectory
that holds a metrics.json), read through the one reader (``metrics_json.read``), as an
aligned table or CSV (``python -m mnist_hpc.runs``).

A run that cannot be read is a row saying why, never an error for the whole listing. A run
whose metrics.json says "running" but whose lock no process holds was killed before it
could say otherwise (SIGKILL, a lost node, a job past its walltime): it is listed as
``running?``, since a run on another node is visible only where the filesystem's locks reach
every node.

Torch-free.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..files import check_path
from ..tables import csv_text, fmt, text_table
from . import metrics_json, rundir

UNREADABLE = "unreadable"
MAYBE_RUNNING = "running?"  # says "running" but no process holds its lock
NOTE_WIDTH = 70  # a failed run's error can be long: the table shows its start, CSV all of it


@dataclasses.dataclass
class RunRow:
    """One run as the listing shows it; None where the run has no such figure (yet)."""

    run_id: str  # the directory's name: what ``compare`` and ``--resume`` take
    run_dir: Path
    status: str  # one of metrics_json.STATUSES, MAYBE_RUNNING or UNREADABLE
    started: float  # when the run (or its last resume) started: config.yaml's mtime
    model: Optional[str] = None
    ranks: Optional[int] = None
    epochs_done: Optional[int] = None
    epochs_planned: Optional[int] = None
    test_acc: Optional[float] = None
    wall_s: Optional[float] = None
    samples_per_s: Optional[float] = None
    note: str = ""  # why it is unreadable, a failed run's error, a doubt about a live run


def started_at(run_dir: Path) -> float:
    """The run writes config.yaml as it starts (and again as it resumes); a directory
    without one falls back to its metrics.json, then to itself."""
    for path in (run_dir / "config.yaml", run_dir / metrics_json.FILENAME, run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def samples_per_s(epochs: list[metrics_json.Epoch]) -> Optional[float]:
    """Training throughput over every recorded epoch: samples over training seconds."""
    seconds = sum(e["train_s"] for e in epochs)
    return sum(e["train_samples"] for e in epochs) / seconds if seconds > 0 else None


def row(run_dir: Path) -> RunRow:
    """The run in ``run_dir`` as a row; a metrics.json that cannot be read gives the reason."""
    started = started_at(run_dir)
    try:
        metrics = metrics_json.read(run_dir)
    except OSError as exc:
        return RunRow(run_dir.name, run_dir, UNREADABLE, started,
                      note=f"{metrics_json.FILENAME}: {exc.strerror or exc}")
    except metrics_json.MetricsError as exc:  # names the file and the key
        return RunRow(run_dir.name, run_dir, UNREADABLE, started, note=str(exc))
    status, note = metrics["status"], metrics.get("error", "")
    if status == metrics_json.RUNNING:
        held = rundir.lock_held(run_dir)
        if held is not True:
            status = MAYBE_RUNNING
            note = ("no process holds its lock: killed, or running on a node whose locks "
                    "this one does not see" if held is False else
                    "cannot tell whether it is alive: its lock cannot be probed here")
    planned = metrics["config"].get("epochs")
    return RunRow(
        run_dir.name, run_dir, status, started, model=metrics["model"]["name"],
        ranks=metrics["world"]["world_size"], epochs_done=len(metrics["epochs"]),
        epochs_planned=planned if isinstance(planned, int) else None,
        test_acc=metrics["final"].get("test_acc"), wall_s=metrics["final"].get("wall_s"),
        samples_per_s=samples_per_s(metrics["epochs"]), note=note)


def _holds_metrics(path: Path) -> bool:
    """A run directory: one that holds a metrics.json, or one this user may not look into
    (its row then says why it cannot be read)."""
    try:
        return path.is_dir() and (path / metrics_json.FILENAME).exists()
    except PermissionError:
        return True


def find_runs(results_dir: Path) -> list[RunRow]:
    """Every run directory directly under ``results_dir``, oldest start first."""
    check_path(str(results_dir), "results directory")
    if not results_dir.is_dir():
        raise UsageError(f"results directory {results_dir} does not exist or is not a "
                         f"directory; give the directory that holds the run directories "
                         f"(the trainer's --results-dir)")
    try:
        entries = list(results_dir.iterdir())
    except OSError as exc:
        raise UsageError(f"cannot list {results_dir} ({exc.strerror}); give a results "
                         f"directory you can read") from None
    runs = [row(path) for path in entries if _holds_metrics(path)]
    return sorted(runs, key=lambda r: (r.started, r.run_id))


def resolve(name: str, results_dir: Path) -> Path:
    """A run named on the command line: its directory, or its run id under ``results_dir``."""
    for candidate in (Path(name), results_dir / name):
        if (candidate / metrics_json.FILENAME).is_file():
            return candidate
    raise UsageError(f"no run {name!r}: neither a run directory nor a run id under "
                     f"{results_dir} (no {metrics_json.FILENAME} found); list the runs with "
                     f"python -m mnist_hpc.runs {results_dir}")


# --- output ----------------------------------------------------------------------------------

CSV_COLUMNS = ("run_id", "status", "model", "ranks", "epochs_done", "epochs_planned",
               "test_acc", "wall_s", "samples_per_s", "started", "note")
HEADER = ("run id", "status", "model", "ranks", "epochs", "test %", "wall s", "samples/s",
          "started", "note")


def epochs_text(run: RunRow) -> str:
    if run.epochs_done is None:
        return "–"
    return f"{run.epochs_done}/{run.epochs_planned if run.epochs_planned is not None else '?'}"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())  # a traceback's lines as one
    return text if len(text) <= width else text[:width - 1] + "…"


def table(runs: list[RunRow]) -> str:
    """An aligned text table, one line per run."""
    lines: list[tuple] = [HEADER]
    for run in runs:
        lines.append((
            run.run_id, run.status, run.model or "–",
            "–" if run.ranks is None else run.ranks, epochs_text(run),
            fmt(run.test_acc, 2), fmt(run.wall_s, 1), fmt(run.samples_per_s, 0),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
            _cut(run.note, NOTE_WIDTH)))
    return text_table(lines)


def csv(runs: list[RunRow]) -> str:
    """The same rows as CSV, full precision and the whole note; ``started`` in ISO 8601."""
    body = [[run.run_id, run.status, run.model, run.ranks, run.epochs_done, run.epochs_planned,
             run.test_acc,
             run.wall_s, run.samples_per_s,
             time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(run.started)), run.note]
            for run in runs]
    return csv_text(list(CSV_COLUMNS), body)
