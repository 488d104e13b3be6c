"""The one description of ``metrics.json``: its file name, statuses and keys, read by the
trainer (which writes it), the scaling report and the job templates' shell helper.

Layout (``schema`` 1; names are stable, new keys may be added)::

    schema, run_id, status (running | completed | failed | preempted), error (when failed)
    config      the resolved configuration
    model       name, parameters, flops_per_sample (training, forward + backward; rank 0
                counts it once with torch.utils.flop_counter)
    world       world_size, nodes, local_world_size, launcher, backend, device, device_name,
                cpu_threads, hostnames (every rank's), job_id, master_addr
    batch       global, per_rank, mode, steps_per_epoch, lr, precision, cuda_graphs
    samples     train, val, test: counted by the all-reduce, not assumed
    epochs[]    epoch, train_s, eval_s, train_samples, train_samples_per_s, comm_s,
                train_acc, train_loss, val_acc, val_loss,
                tflops (achieved, all ranks), mfu (None where the device's peak is unknown),
                ranks: per-rank timing (mnist_hpc.observe.timing), gathered by rank 0:
                  data_s, compute_s, comm_s, eval_s: each {min, median, max, std} over the
                    ranks (comm_s None where not measured: one process, NCCL)
                  slowest {rank, host, compute_s, compute_over_median}
                  stragglers [{rank, host, compute_over_median}] over straggler_threshold
                  straggler_threshold, peak_memory_bytes (max over ranks)
    final       test_acc, test_loss, val_acc, wall_s, data_load_s, init_process_group_s, train_s,
                warmup_s (inside wall_s), startup_s (process start to the first step)
    resumed_from  where each resume picked up
    versions    python, torch, torchvision, mnist_hpc, git_commit, cuda, platform, argv, hostname

Torch-free. ``python -m mnist_hpc.metrics status RUN_DIR`` prints a run's status for shell
scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

FILENAME = "metrics.json"
SCHEMA = 1

RUNNING, COMPLETED, FAILED, PREEMPTED = "running", "completed", "failed", "preempted"
STATUSES = (RUNNING, COMPLETED, FAILED, PREEMPTED)


def read(run_dir: Path) -> dict:
    """A run's metrics; raises OSError or ValueError when there is none to read."""
    payload = json.loads((Path(run_dir) / FILENAME).read_text())
    if not isinstance(payload, dict):
        raise ValueError(f"{Path(run_dir) / FILENAME} does not hold a JSON object")
    return payload


def status(run_dir: Path) -> Optional[str]:
    """The status recorded in a run's metrics.json, or None if there is none to read."""
    try:
        value = read(run_dir).get("status")
    except (OSError, ValueError):
        return None
    return value if isinstance(value, str) else None
