"""A study: its id, its folder under the results directory, and ``study.json``, the manifest
of the planned runs that ``submit`` and ``local`` fill in (commands, job ids, exit codes) and
``report`` reads back, so a run that never started is listed rather than forgotten."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..files import check_name, write_json
from .sweep import PlannedRun, Sweep

MANIFEST = "study.json"
# a run's state in the manifest: what the submitter or the local runner last did with it
PLANNED, SUBMITTED, SUBMIT_FAILED = "planned", "submitted", "submit-failed"
STARTED, EXITED = "running", "exited"


def study_id_for(sweep: Sweep, given: Optional[str]) -> str:
    """The given id (checked: it becomes a folder name), else name-time-random."""
    if given is None:
        return f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return check_name(given, "--study-id")


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
                  "command": None, "state": PLANNED} for run in runs],
    }
    save_manifest(study_dir, manifest)
    return study_dir


def save_manifest(study_dir: Path, manifest: dict) -> None:
    write_json(study_dir / MANIFEST, manifest)


def read_manifest(study_dir: Path) -> Optional[dict]:
    path = study_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}")
