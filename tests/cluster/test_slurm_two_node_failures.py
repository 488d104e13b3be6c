"""Requeue and a lost node on a real two-node Slurm cluster (tests/slurm_cluster.py), as a
user meets them: USR1 before the time limit, ``scontrol requeue``, a node that vanishes
mid-job. A cluster of its own, so that this file runs beside test_slurm_two_nodes.py."""

from __future__ import annotations

import time

import netns
import numpy as np
import pytest
from conftest import read_metrics
from launchers import train
from slurm_cluster import slurm_two_nodes
from slurm_jobs import RECIPE, assert_completed, epochs_done, job_log, submit, wait_for_epoch

# the requeue tests' recipe: long enough that the signal lands mid-run
EPOCHS = 10
LONG = [*RECIPE, "--epochs", str(EPOCHS), "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_two_nodes(tmp_path_factory.mktemp("slurm-two-nodes")) as two_nodes:
        yield two_nodes


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> np.ndarray:
    """The requeue tests' recipe in one process, never stopped: the history to end with."""
    results = tmp_path_factory.mktemp("unbroken")
    result = train("single", LONG, results)
    assert result.returncode == 0, str(result)
    return np.load(next(results.iterdir()) / "history.npy")


@pytest.mark.parametrize("script, how", [("slurm.sh", "usr1"),
                                         ("slurm_torchrun.sh", "scontrol requeue")])
def test_a_requeued_two_node_job_ends_with_the_unbroken_history(
        cluster, tmp_path, unbroken, script, how):
    """USR1 (Slurm's warning before the time limit, which srun forwards to the tasks) or
    ``scontrol requeue`` (SIGTERM from Slurm, which torchrun passes to its workers; Slurm
    requeues the job itself) mid-run: a checkpoint, the job requeued, the second attempt
    resuming it on both nodes. (The torchrun template's USR1 becomes that same SIGTERM,
    sent by scancel: tests/run/test_slurm_lib.py.)"""
    job = submit(cluster, tmp_path, script, ["--nodes=2", "--ntasks-per-node=1",
                                              "--cpus-per-task=1"], LONG)
    run_dir = tmp_path / "results" / f"slurm-{job}"
    wait_for_epoch(cluster, job, run_dir, tmp_path)
    if how == "usr1":
        cluster.run("scancel", "--signal=USR1", "--batch", job)
    else:
        cluster.run("scontrol", "requeue", job)
    cluster.wait_for(job, lambda i: int(i.get("Restarts", 0)) >= 1, 120, "requeue")
    assert epochs_done(run_dir) < EPOCHS, "the run ended before the signal: make it longer"
    cluster.release_requeued(job, lambda: "attempt 2" in job_log(tmp_path, job))
    info = cluster.wait_finished(job, timeout=300)
    assert_completed(cluster, info, tmp_path, job)
    log = job_log(tmp_path, job)
    assert int(info["Restarts"]) == 1 and "Resuming" in log, log

    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["world"]["nodes"] == 2, metrics
    resumed = metrics["resumed_from"]
    assert len(resumed) == 1 and resumed[0]["world_size"] == 2, resumed
    history = np.load(run_dir / "history.npy")
    print(f"{how}: resumed at epoch {resumed[0]['epoch']} step {resumed[0]['step']}; largest "
          f"difference from the unbroken history {np.abs(history - unbroken).max():.2e}")
    np.testing.assert_allclose(history, unbroken, rtol=1e-5,
                               err_msg="the requeued run differs from the unbroken one")


def test_a_lost_node_ends_the_job_naming_the_node_and_rank(cluster, tmp_path):
    """The second node's slurmd and tasks killed mid-run (as a node that loses power): the
    job ends within --timeout + 60 s, the error names the vanished rank and its node, and the
    run directory says failed with nothing half-written. srun itself would wait for the lost
    tasks until Slurm declares the node down (SlurmdTimeout); the template ends the step
    STEP_GRACE (30) s after the run failed. The node is brought back after."""
    timeout = 30
    job = submit(cluster, tmp_path, "slurm.sh", ["--nodes=2", "--ntasks-per-node=1",
                                                  "--cpus-per-task=1"],
                 [*RECIPE, "--epochs", "100", "--timeout", str(timeout)])
    run_dir = tmp_path / "results" / f"slurm-{job}"
    wait_for_epoch(cluster, job, run_dir, tmp_path)
    lost = cluster.hosts[1]
    netns.kill_inside(lost.namespace)
    killed = time.monotonic()
    try:
        # the batch script's last line; Slurm's own record waits for the node (below)
        while "=== failed with exit code" not in job_log(tmp_path, job):
            assert time.monotonic() - killed < timeout + 60, (
                f"the job still runs {timeout + 60} s after the node was lost\n"
                f"{job_log(tmp_path, job)}\n{cluster.logs()}")
            time.sleep(0.5)
        ended_s = time.monotonic() - killed
    finally:
        cluster.restart_node(1)
    info = cluster.wait_finished(job, timeout=60)
    print(f"node lost: the job ended {ended_s:.1f} s after the kill ({info['JobState']})")
    log = job_log(tmp_path, job)
    assert info["JobState"] in ("FAILED", "NODE_FAIL"), f"{log}\n{info}"
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "failed", metrics
    assert f"no word from rank 1 on {lost.hostname}" in metrics["error"], metrics["error"]
    assert f"no word from rank 1 on {lost.hostname}" in log, log
    leftovers = [p.name for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


