"""``--profile N``: N steps of the second epoch recorded with ``torch.profiler``.

The second epoch, because the first pays one-time costs (allocator growth, kernel selection,
DDP's bucket rebuild) that would crowd the steps worth reading. The trace is Chrome's trace
JSON, which Perfetto (https://ui.perfetto.dev) and ``chrome://tracing`` open directly and
TensorBoard's profiler plugin reads; it is written to ``<run>/profile/rank-N.trace.json`` by
rank 0, or by every rank with ``--profile-ranks all``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch.profiler import ProfilerActivity, profile

PROFILE_DIR = "profile"
EPOCH = 1  # the second epoch


def trace_path(run_dir: Path, rank: int) -> Path:
    return run_dir / PROFILE_DIR / f"rank-{rank}.trace.json"


class StepProfiler:
    """Starts with the second epoch's first step, stops after ``steps`` steps or at the
    epoch's end, and writes the trace; does nothing on ranks that do not record."""

    def __init__(self, steps: int, run_dir: Path, rank: int, device: torch.device) -> None:
        self.steps, self.path, self.device = steps, trace_path(run_dir, rank), device
        self.active: Optional[profile] = None
        self.taken = 0

    def epoch_started(self, epoch: int) -> None:
        if epoch != EPOCH or self.path.exists():
            return
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.active = profile(activities=activities, record_shapes=True)
        self.active.start()

    def step_done(self) -> None:
        if self.active is None:
            return
        self.active.step()  # marks the step boundaries in the trace
        self.taken += 1
        if self.taken >= self.steps:
            self.epoch_ended()

    def epoch_ended(self) -> None:
        """Stop and write the trace (an epoch shorter than N steps ends it early)."""
        if self.active is None:
            return
        self.active.stop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.active.export_chrome_trace(str(self.path))
        self.active = None
