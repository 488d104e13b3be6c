"""Submitting the job templates to the Slurm test clusters and watching them
(tests/cluster/test_slurm_*.py): the recipe, sbatch as a user types it on two nodes, the
job's log and its run's progress."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import REPO
from launchers import COMMON
from slurm_cluster import SlurmCluster

RECIPE = [*COMMON, "--shuffle", "--timeout", "60", "--no-plots"]  # 2 epochs of --limit 499


def submit(cluster: SlurmCluster, tmp_path: Path, script: str, sizing: list[str],
           train_args: list[str], exports: str = "", ranks_per_node: int = 1) -> str:
    """sbatch a template as its header shows, CPU only, results under tmp_path/results."""
    return cluster.sbatch(
        *sizing, "--gpus-per-node=0", f"--chdir={REPO}", f"--output={tmp_path}/slurm-%j.out",
        f"--export=ALL,CPU_ONLY=1,NPROC_PER_NODE={ranks_per_node},"
        f"TRAIN_ARGS={' '.join(train_args)},RESULTS_DIR={tmp_path / 'results'}{exports}",
        str(REPO / "jobs" / script))


def job_log(tmp_path: Path, job: str) -> str:
    path = tmp_path / f"slurm-{job}.out"
    return path.read_text(errors="replace") if path.exists() else "(no job log)"


def assert_completed(cluster: SlurmCluster, info: dict, tmp_path: Path, job: str) -> None:
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), (
        f"{job_log(tmp_path, job)}\n{info}\n{cluster.logs()}")


def epochs_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "metrics.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_epoch(cluster: SlurmCluster, job: str, run_dir: Path, tmp_path: Path) -> None:
    """Until the job's run has recorded an epoch (its signal handlers are installed)."""
    deadline = time.monotonic() + 180
    while epochs_done(run_dir) < 1:
        state = cluster.job(job)["JobState"]
        assert state in ("PENDING", "RUNNING"), job_log(tmp_path, job)
        assert time.monotonic() < deadline, "no epoch in 180 s\n" + job_log(tmp_path, job)
        time.sleep(0.2)
