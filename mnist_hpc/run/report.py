"""The console lines a batch log can use: one line per epoch (where the run is, its losses,
speed and the time left) and a one-screen summary when the run completes. Built from the
records ``metrics.json`` holds, so the log and the file never disagree. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import metrics_json
from .rundir import MODEL


def duration(seconds: float) -> str:
    """H:MM:SS, as a scheduler's walltime reads."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def eta_s(epochs: list[metrics_json.Epoch], total_epochs: int) -> float:
    """The epochs left times the mean epoch so far (training and evaluation)."""
    if not epochs:
        return 0.0
    mean = sum(e["train_s"] + e["eval_s"] for e in epochs) / len(epochs)
    return mean * max(0, total_epochs - (epochs[-1]["epoch"] + 1))


def epoch_line(epochs: list[metrics_json.Epoch], total_epochs: int, seen: str) -> str:
    """The last epoch's line: the notebook's "Epoch i: val. loss ..., val. accuracy ..." first
    (0-based, as its history), then the progress (``epoch i+1/N``), train loss, throughput,
    times and the ETA, then what the observer saw (``seen``)."""
    e = epochs[-1]
    return (f"Epoch {e['epoch']}: val. loss: {e['val_loss']:.4f}, val. accuracy: "
            f"{e['val_acc']:.4f}; epoch {e['epoch'] + 1}/{total_epochs}, train loss "
            f"{e['train_loss']:.4f}, {e['train_samples_per_s']:,.0f} samples/s (train "
            f"{e['train_s']:.1f} s, eval {e['eval_s']:.1f} s), ETA "
            f"{duration(eta_s(epochs, total_epochs))}; {seen}")


def _outside_training(final: metrics_json.Final) -> list[str]:
    """Where the process's time went besides training (runs before these figures: nothing)."""
    if "process_s" not in final:
        return []
    parts = {"start-up and imports": final["imports_s"],
             "process group": final["init_process_group_s"], "data": final["data_load_s"],
             "warm-up": final["warmup_s"], "evaluation": final["eval_s"],
             "writing results": final["write_s"]}
    outside = final["process_s"] - final["train_s"]
    parts["other"] = outside - sum(parts.values())
    return [f"  outside training     {outside:.1f} s of the process's {final['process_s']:.1f} s: "
            + ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts.items()
                        if round(seconds, 1))]


def summary(metrics: metrics_json.Metrics, run_dir: Path) -> str:
    """A completed run on one screen: validation accuracy (best and last), test accuracy,
    wall time, mean training throughput, the ranks, and where the model is."""
    epochs, final = metrics["epochs"], metrics["final"]
    best: Optional[metrics_json.Epoch] = max(epochs, key=lambda e: e["val_acc"], default=None)
    train_s = sum(e["train_s"] for e in epochs)
    samples = sum(e["train_samples"] for e in epochs)
    world = metrics["world"]
    lines = [f"Summary of run {metrics['run_id']} ({metrics['model']['name']}, "
             f"{world['world_size']} rank(s), {world['device']}):"]
    if best is not None:
        lines.append(f"  validation accuracy  best {best['val_acc']:.4f} (epoch "
                     f"{best['epoch']}), last {epochs[-1]['val_acc']:.4f}")
    lines += [
        f"  test accuracy        {final['test_acc']:.4f} (loss {final['test_loss']:.4f}, "
        f"{metrics['samples']['test']:,} images)",
        f"  wall time            {duration(final['wall_s'])} (training "
        f"{duration(train_s)} over {len(epochs)} epoch(s))",
        *_outside_training(final),
        "  mean throughput      "
        + (f"{samples / train_s:,.0f} samples/s while training" if train_s > 0 else "n/a"),
        f"  model                {run_dir / MODEL} (python -m mnist_hpc.evaluate {run_dir}"
        + (f" --limit {limit})" if (limit := metrics["config"].get("limit")) else ")"),
    ]
    return "\n".join(lines)
