"""jobs/slurm.sh and jobs/slurm_torchrun.sh submitted with sbatch to a real one-node Slurm
cluster (tests/slurm_cluster.py).

Two CPU workers on one node stand in for GPUs (CPU_ONLY=1); everything else is what a user
runs: sbatch's --export contract, srun (or one torchrun per node) launching the trainer, the
run directory named by the job id, and the preemption path (USR1 -> checkpoint -> requeue ->
resume).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, read_metrics
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (fixture)


# how each template gets two workers on this 2-CPU node
SIZING = {
    "slurm.sh": ["--ntasks-per-node=2", "--cpus-per-task=1"],
    "slurm_torchrun.sh": ["--ntasks-per-node=1", "--cpus-per-task=2"],
}
LAUNCHER = {"slurm.sh": "slurm", "slurm_torchrun.sh": "torchrun"}


def submit(cluster: SlurmCluster, tmp_path: Path, script: str, epochs: int,
           train_args: str, exports: str = "") -> str:
    """sbatch a template as its header shows, CPU only, results under tmp_path/results;
    ``exports``: more knobs, ",NAME=value..."."""
    return cluster.sbatch(
        "--nodes=1",
        *SIZING[script],
        "--gpus-per-node=0",
        f"--chdir={REPO}",
        f"--output={tmp_path}/slurm-%j.out",
        f"--export=ALL,CPU_ONLY=1,NPROC_PER_NODE=2,CONFIG=default,EPOCHS={epochs},"
        f"TRAIN_ARGS={train_args},RESULTS_DIR={tmp_path / 'results'}{exports}",
        str(REPO / "jobs" / script),
    )


def job_log(tmp_path: Path, job: str) -> str:
    path = tmp_path / f"slurm-{job}.out"
    return path.read_text(errors="replace") if path.exists() else "(no job log)"


def completed_epochs(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "metrics.json").read_text())["epochs"])
    except (OSError, ValueError, KeyError):
        return 0


def test_cluster_runs_a_two_task_step(slurm_cluster, tmp_path):
    """The cluster itself, before any template: a batch job whose srun starts 2 tasks."""
    job = slurm_cluster.sbatch("--ntasks=2", f"--output={tmp_path}/wrap-%j.out",
                               "--wrap", "srun hostname")
    info = slurm_cluster.wait_finished(job, timeout=60)
    output = (tmp_path / f"wrap-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), output
    assert len(output.split()) == 2, output  # one hostname per task


def test_srun_tasks_find_their_node_and_rank_0s_host(slurm_cluster, tmp_path):
    """mnist_hpc.job.layout in the tasks of a real 2-task step: srun's variables give the node
    count and index, and the step's node list (expanded by the real scontrol) rank 0's host."""
    code = ("import json, os; from mnist_hpc.job import layout; "
            "env = layout.rendezvous(layout.detect(os.environ), os.environ); "
            "print(json.dumps([env.launcher, env.rank, env.local_world_size, env.nodes, "
            "env.node_rank, env.master_addr]))")
    job = slurm_cluster.sbatch("--ntasks=2", f"--chdir={REPO}",
                               f"--output={tmp_path}/layout-%j.out", "--wrap",
                               f"srun {shlex.quote(sys.executable)} -c {shlex.quote(code)}")
    info = slurm_cluster.wait_finished(job, timeout=60)
    output = (tmp_path / f"layout-{job}.out").read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), output
    tasks = sorted(json.loads(line) for line in output.splitlines())
    assert tasks == [["slurm", rank, 2, 1, 0, slurm_cluster.node] for rank in (0, 1)], output


@pytest.mark.parametrize("script", ["slurm.sh", "slurm_torchrun.sh"])
def test_sbatch_accepts_the_directives(slurm_cluster, script):
    """sbatch itself parses every #SBATCH line (--test-only: nothing is queued); only the
    sizes this 2-CPU, GPU-less node cannot hold are overridden."""
    result = slurm_cluster.run("sbatch", "--test-only", "--nodes=1", *SIZING[script],
                               "--gpus-per-node=0", f"--chdir={REPO}",
                               str(REPO / "jobs" / script), check=False)
    assert result.returncode == 0, result.stderr
    assert "to start at" in result.stderr, result.stderr


@pytest.mark.parametrize("script", ["slurm.sh", "slurm_torchrun.sh"])
def test_job_runs_the_doctor_then_trains_with_two_workers(slurm_cluster, tmp_path, script):
    """PREFLIGHT=1, then training; the requeue test below runs each template without it."""
    job = submit(slurm_cluster, tmp_path, script, 1, "--limit 512 --timeout 60",
                 ",PREFLIGHT=1")
    info = slurm_cluster.wait_finished(job, timeout=300)
    log = job_log(tmp_path, job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    # the doctor ran first, under the step's own launcher, and passed
    assert log.index("=== preflight") < log.index("Doctor OK") < log.index("Run directory:"), log
    doctor = json.loads((tmp_path / "results" / f"doctor-slurm-{job}.json").read_text())
    assert doctor["status"] == "ok", doctor["findings"]
    assert doctor["world"]["world_size"] == 2 and doctor["world"]["job_id"] == job
    assert {r["launcher"] for r in doctor["ranks"]} == {LAUNCHER[script]}
    assert doctor["allreduce"]["bus_bandwidth_gbs"] > 0

    run_dir = tmp_path / "results" / f"slurm-{job}"
    assert f"Run directory: {run_dir}" in log
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["world"]["world_size"] == 2
    assert metrics["world"]["job_id"] == job
    assert metrics["world"]["launcher"] == LAUNCHER[script]
    assert np.load(run_dir / "history.npy").shape == (1, 4)


def test_a_failed_preflight_stops_the_job_before_training(slurm_cluster, tmp_path):
    missing = tmp_path / "no-data"
    job = submit(slurm_cluster, tmp_path, "slurm.sh", 1, f"--limit 512 --data-dir {missing}",
                 ",PREFLIGHT=1")
    info = slurm_cluster.wait_finished(job, timeout=300)
    log = job_log(tmp_path, job)
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "1:0"), log
    assert "FAIL data: ranks 0-1: data directory" in log, log
    assert "preflight failed with exit code 1: not training" in log, log
    assert "Run directory:" not in log and not (tmp_path / "results" / f"slurm-{job}").exists()


@pytest.mark.parametrize("script", ["slurm.sh", "slurm_torchrun.sh"])
def test_usr1_checkpoints_requeues_and_resumes(slurm_cluster, tmp_path, script):
    epochs = 6  # about 4 s each here: the signal lands well before the end
    job = submit(slurm_cluster, tmp_path, script, epochs,
                 "--limit 1024 --checkpoint-every 1 --timeout 60")
    run_dir = tmp_path / "results" / f"slurm-{job}"

    # the warning Slurm sends before the time limit (--signal=B:USR1@120), sent now, once an
    # epoch has finished, so the trainer has its handlers installed
    deadline = time.monotonic() + 120
    while completed_epochs(run_dir) < 1:
        state = slurm_cluster.job(job)["JobState"]
        assert state in ("PENDING", "RUNNING"), job_log(tmp_path, job)
        assert time.monotonic() < deadline, "no epoch within 120 s\n" + job_log(tmp_path, job)
        time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", job)

    slurm_cluster.wait_for(job, lambda i: int(i.get("Restarts", 0)) >= 1, 120, "requeue")
    assert completed_epochs(run_dir) < epochs, "the run ended before the signal: make it longer"
    # While it is requeued the job passes through short-lived states (its first attempt's
    # end among them), so wait for the second attempt's header before waiting for the end.
    requeued = time.monotonic()
    deadline = requeued + 120
    while "attempt 2" not in job_log(tmp_path, job):
        info = slurm_cluster.job(job)
        # a requeued job waits out the credential lifetime (cred_expire=10 s here); releasing
        # it sooner races slurmd's revoked credential ("Job credential revoked": job FAILED)
        if (info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime"
                and time.monotonic() - requeued > 15):
            slurm_cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
        assert time.monotonic() < deadline, (
            f"no second attempt within 120 s: {info}\n{job_log(tmp_path, job)}\n"
            f"{slurm_cluster.logs()}")
        time.sleep(0.5)
    info = slurm_cluster.wait_finished(job, timeout=300)
    log = job_log(tmp_path, job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), (
        f"{log}\n{info}\n{slurm_cluster.logs()}")
    assert int(info["Restarts"]) == 1, log

    # attempt 1: signal passed on, checkpoint, requeue; attempt 2: resumed and finished
    assert "SIGUSR1 received" in log, log
    assert "requeueing job" in log, log
    assert "attempt 2" in log, log
    assert "Resuming" in log, log
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert len(metrics["epochs"]) == epochs
    assert metrics["resumed_from"], metrics
    assert np.load(run_dir / "history.npy").shape == (epochs, 4)
