"""Gather a study folder into one RunRecord per run: the numbers measured in each run
directory's metrics.json (read through ``mnist_hpc.run.metrics_json``), or why there are none
(missing, unreadable, failed, still running).

Runs are matched to the manifest by run id, then by the job id (the templates name their run
directories ``pbs-<job>`` or ``slurm-<job>``, and metrics.json records the job id too); any
other run directory in the folder is reported as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..run import metrics_json
from .study import PLANNED, SUBMIT_FAILED, read_manifest

# statuses the report adds to metrics_json.STATUSES
MISSING, UNREADABLE, INCOMPLETE = "missing", "unreadable", "incomplete"


@dataclass
class RunRecord:
    """One run as the report sees it: measured numbers, or why there are none."""

    label: str
    status: str  # one of metrics_json.STATUSES, MISSING, UNREADABLE or INCOMPLETE
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
    compute_ratio: Optional[float] = None  # slowest rank's compute over the ranks' median
    comm_share: Optional[float] = None  # median rank's communication wait / training time
    measured_epochs: int = 0
    val_acc: Optional[float] = None
    test_acc: Optional[float] = None
    parameters: Optional[int] = None
    cpu_threads: Optional[int] = None
    detail: str = ""
    metrics: Optional[metrics_json.Metrics] = None  # None when there is none to read


def measure(metrics: metrics_json.Metrics) -> dict:
    """Throughput over the epochs after the first (warm-up) when there are two or more."""
    epochs = metrics["epochs"]
    measured = epochs[1:] if len(epochs) >= 2 else epochs
    if not measured:
        return {}
    train_s = sum(e["train_s"] for e in measured)
    samples = sum(e["train_samples"] for e in measured)
    comm = [e["comm_s"] for e in measured]
    ranks = [e["ranks"] for e in measured]
    per_rank = {"compute_ratio": max(r["slowest"]["compute_over_median"] for r in ranks)}
    if all(r["comm_s"] for r in ranks):
        per_rank["comm_share"] = sum(r["comm_s"]["median"] for r in ranks) / train_s
    return {**per_rank, "samples_per_s": samples / train_s, "epoch_s": train_s / len(measured),
            "comm_s": (sum(comm) / len(comm)) if all(c is not None for c in comm) else None,
            "measured_epochs": len(measured)}


def _record(label: str, run_dir: Path, job_id: Optional[str]) -> RunRecord:
    try:
        metrics = metrics_json.read(run_dir)
    except OSError as exc:
        return RunRecord(label, UNREADABLE, run_dir, job_id,
                         detail=f"{metrics_json.FILENAME}: {exc}")
    except metrics_json.MetricsError as exc:  # names the file already
        return RunRecord(label, UNREADABLE, run_dir, job_id, detail=str(exc))
    world, batch, final = metrics["world"], metrics["batch"], metrics["final"]
    record = RunRecord(
        label, metrics["status"], run_dir, job_id or world["job_id"],
        ranks=world["world_size"], nodes=world["nodes"],
        global_batch=batch["global"], per_rank_batch=batch["per_rank"],
        steps_per_epoch=batch["steps_per_epoch"], val_acc=final.get("val_acc"),
        test_acc=final.get("test_acc"), parameters=metrics["model"]["parameters"],
        cpu_threads=world["cpu_threads"] if world["device"] == "cpu" else None,
        detail=metrics.get("error", ""), metrics=metrics)
    for key, value in measure(metrics).items():
        setattr(record, key, value)
    if record.status == metrics_json.COMPLETED and record.samples_per_s is None:
        record.status, record.detail = INCOMPLETE, "completed without epoch records"
    return record


def gather(study_dir: Path) -> tuple[Optional[dict], list[RunRecord]]:
    """Every run of the study: those in the manifest (found by run id or job id, or listed as
    missing) and any other run directory in the folder."""
    if not study_dir.is_dir():
        raise UsageError(f"study folder {study_dir} does not exist")
    manifest = read_manifest(study_dir)
    run_dirs = {p.name: p for p in study_dir.iterdir()
                if p.is_dir() and (p / metrics_json.FILENAME).exists()}
    by_job: dict[str, Path] = {}
    for path in run_dirs.values():
        try:
            job = metrics_json.read(path)["world"]["job_id"]
        except (OSError, ValueError):  # reported as unreadable below
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
            if entry.get("state") == SUBMIT_FAILED:
                why = f"submission failed: {entry.get('error', '')}"
            elif entry.get("state") == PLANNED:
                why = "never submitted"
            elif entry.get("exit_code") not in (None, 0):
                why = f"exited {entry['exit_code']} before writing a run directory"
            elif job:
                why = f"job {job}: no run directory (queued, still starting, or never ran)"
            else:
                why = "no run directory"
            records.append(RunRecord(label, MISSING, None, job, ranks=entry.get("ranks"),
                                     nodes=entry.get("nodes"), detail=why))
            continue
        used.add(found.name)
        record = _record(label, found, job)
        if record.status == metrics_json.RUNNING and entry.get("exit_code") not in (None, 0):
            record.status = metrics_json.FAILED
            record.detail = record.detail or f"exited {entry['exit_code']}"
        records.append(record)
    for name in sorted(set(run_dirs) - used):
        records.append(_record(name, run_dirs[name], None))
    for record in records:
        if record.status != metrics_json.COMPLETED:
            logs = [study_dir / "logs" / f"{record.label}.log"]
            if record.job_id:
                logs.append(study_dir / f"slurm-{record.job_id.split('.')[0]}.out")
            found = next((log for log in logs if log.is_file()), None)
            if found:
                record.detail += f" (log: {found})"
    return manifest, records
