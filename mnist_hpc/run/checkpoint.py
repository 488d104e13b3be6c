"""Checkpoints: everything needed to continue a run exactly, saved atomically, loaded as data.

A checkpoint holds the unwrapped model, optimizer and scheduler states, the position (epoch
and step), the history so far and the hash of the steps taken (``config.resolve``). No rank
draws from a stream of its own (dropout is keyed per sample: step.dropout), so a checkpoint
resumes at any world size that takes the same steps. It is loaded with
``torch.load(weights_only=True)``: tensors and plain containers only, never code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Collection, Optional

import torch

from ..errors import UsageError
from ..files import atomic_write
from .rundir import CHECKPOINT, check_not_completed, find_resumable

FORMAT = 2  # 1: per-rank RNG states, dropout drawn per rank (resumed at its world size only)


def save(run_dir: Path, payload: dict) -> Path:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    path = run_dir / CHECKPOINT
    atomic_write(path, buffer.getvalue())
    return path


# what train.py reads from a checkpoint: a file without them is not one of ours
REQUIRED = ("config", "recipe_hash", "model", "optimizer", "epoch", "step", "history",
            "epoch_records", "world_size", "steps_per_epoch")


def load(path: Path) -> dict:
    """Read a checkpoint as data. Any unreadable or foreign file is a UsageError."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file fails in many ways (zip, pickle, storage, ...)
        raise UsageError(f"cannot read checkpoint {path} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); "
                         f"start a fresh run or point --resume at another run directory")
    if isinstance(payload, dict) and payload.get("format") == 1:
        raise UsageError(f"{path} was written by mnist_hpc before dropout was keyed per sample "
                         f"(checkpoint format 1): its run cannot go on with the same random "
                         f"draws; start a fresh run")
    if (not isinstance(payload, dict) or payload.get("format") != FORMAT
            or not all(key in payload for key in REQUIRED)
            or not isinstance(payload["config"], dict)):
        raise UsageError(f"{path} is not a mnist_hpc checkpoint of format {FORMAT}; "
                         f"start a fresh run")
    return payload


def resolve(resume: str, results_dir: str, run_id: Optional[str]) -> Optional[Path]:
    """The run directory to continue, or None to start fresh (``auto`` without a checkpoint).

    RUN_DIR: that directory; ``latest``: the newest checkpointed unfinished run under
    results_dir; ``auto``: results_dir/run_id if it holds a checkpoint (how a requeued job
    continues). A completed run is never changed: resuming one is a UsageError (the entry
    point answers ``auto`` of a completed run with ``results.completed_message``, exit 0).
    """
    if resume == "auto":
        if run_id is None:
            raise UsageError("--resume auto needs --run-id (the name the job reuses when it "
                             "is requeued), e.g. --run-id slurm-$SLURM_JOB_ID")
        candidate = Path(results_dir) / run_id
        check_not_completed(candidate)  # the entry point exits 0 before, on completed_message
        return candidate if (candidate / CHECKPOINT).is_file() else None
    if resume == "latest":
        found = find_resumable(results_dir)
        if found is None:
            raise UsageError(f"--resume latest found no unfinished run with a {CHECKPOINT} "
                             f"under {results_dir}; pass --results-dir or a run directory")
        return found
    run_dir = Path(resume).expanduser().resolve()
    check_not_completed(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise UsageError(f"--resume {resume}: no {CHECKPOINT} in {run_dir}; give a run "
                         f"directory that holds one, or latest")
    return run_dir


def check_compatible(payload: dict, recipe_hashes: Collection[str], model: str,
                     steps_per_epoch: int, force: bool) -> list[str]:
    """Refuse a checkpoint from another recipe unless forced; return warnings to print.
    ``recipe_hashes``: those of this run's steps (``config.resolve.recipe_hashes``), at this
    run's world size; any world size that takes the same steps resumes."""
    problems = []
    if payload.get("config", {}).get("model") != model:
        problems.append(f"model {payload.get('config', {}).get('model')!r} != {model!r}")
    if payload.get("recipe_hash") not in recipe_hashes:
        problems.append("recipe (lr, global batch, optimizer, seed, ...) differs")
    if payload.get("steps_per_epoch") != steps_per_epoch:
        # the last global batch is dropped where it has fewer samples than ranks
        problems.append(f"{payload.get('steps_per_epoch')} steps per epoch at world size "
                        f"{payload.get('world_size')}, {steps_per_epoch} at this one (the last "
                        f"batch is too small to split over these ranks)")
    if problems and not force:
        raise UsageError("checkpoint does not match this run: " + "; ".join(problems)
                         + "; rerun with the original settings, or pass --resume-force")
    return problems


def restore(payload: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: Optional[Any]) -> None:
    """Put the checkpoint's states into a freshly built run, at any world size."""
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None and payload.get("scheduler") is not None:
            scheduler.load_state_dict(payload["scheduler"])
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"the checkpoint does not fit this run ({type(exc).__name__}: "
                         f"{first_line}); --resume-force cannot change the network or the "
                         f"optimizer, rerun with the original --model and --optimizer")
