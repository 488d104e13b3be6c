"""The job templates submitted with ``sbatch --nodes=2`` to a real two-node Slurm cluster
(``slurm_two_nodes`` in tests/slurm_cluster.py: one slurmd per network namespace, each node
with its own hostname and address), as a user submits them.

What only more than one node shows: srun placing ranks on both nodes, the rendezvous host
taken from the allocation's node list (srun) or torchrun's c10d rendezvous on the first node,
gloo across the nodes, metrics.json counting 2 nodes, the doctor's per-node rows, a requeued
multi-node job resuming, a node lost mid-job, and a job array spread over the nodes. The
recipe is launchers.COMMON's (keyed dropout: any world size trains alike), so every history
must match one process's to float noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import netns
import numpy as np
import pytest
from conftest import REPO, read_metrics
from launchers import COMMON, LIMIT, train, trained
from slurm_cluster import SlurmCluster, slurm_two_nodes

from mnist_hpc import grid
from mnist_hpc.job.hostlist import parse as parse_hostlist

LAUNCHER = {"slurm.sh": "slurm", "slurm_torchrun.sh": "torchrun"}
# how each template gets 2 ranks on each 2-CPU node
SIZING = {
    "slurm.sh": ["--ntasks-per-node=2", "--cpus-per-task=1"],
    "slurm_torchrun.sh": ["--ntasks-per-node=1", "--cpus-per-task=2"],
}
RECIPE = [*COMMON, "--shuffle", "--timeout", "60"]  # 2 epochs of --limit 999
# the requeue tests' recipe: long enough that the signal lands mid-run
LONG = [*RECIPE, "--epochs", "6", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_two_nodes(tmp_path_factory.mktemp("slurm-two-nodes")) as two_nodes:
        yield two_nodes


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


@pytest.mark.parametrize("script", ["slurm.sh", "slurm_torchrun.sh"])
def test_two_node_job_runs_the_doctor_then_trains_like_one_process(
        cluster, tmp_path, tmp_path_factory, script):
    """2 nodes x 2 ranks, PREFLIGHT=1: the doctor's rows per node, then the training."""
    job = submit(cluster, tmp_path, script, ["--nodes=2", *SIZING[script]], RECIPE,
                 ",PREFLIGHT=1", ranks_per_node=2)
    info = cluster.wait_finished(job, timeout=300)
    assert_completed(cluster, info, tmp_path, job)
    log = job_log(tmp_path, job)
    allocation = parse_hostlist(info["NodeList"])
    assert allocation == cluster.nodes, info

    doctor = json.loads((tmp_path / "results" / f"doctor-slurm-{job}.json").read_text())
    assert doctor["status"] == "ok", doctor["findings"]
    assert [(r["rank"], r["node_rank"], r["host"]) for r in doctor["ranks"]] == [
        (rank, rank // 2, allocation[rank // 2]) for rank in range(4)], doctor["ranks"]
    assert log.index("Doctor OK") < log.index("Run directory:"), log

    metrics = read_metrics(tmp_path / "results" / f"slurm-{job}")
    world = metrics["world"]
    assert metrics["status"] == "completed", log
    assert (world["world_size"], world["local_world_size"], world["nodes"]) == (4, 2, 2), world
    assert (world["launcher"], world["job_id"]) == (LAUNCHER[script], job), world
    # ranks 0-1 on the first node, 2-3 on the second; rank 0 and the rendezvous on the first
    assert world["hostnames"] == [allocation[0]] * 2 + [allocation[1]] * 2, world
    assert world["master_addr"] == allocation[0], world
    assert metrics["samples"] == {"train": LIMIT, "val": LIMIT, "test": LIMIT}

    one_process = trained("single", True, tmp_path_factory)
    np.testing.assert_allclose(np.load(tmp_path / "results" / f"slurm-{job}" / "history.npy"),
                               np.load(one_process / "history.npy"), rtol=1e-5,
                               err_msg="two nodes differ from one process")


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
    assert epochs_done(run_dir) < 6, "the run ended before the signal: make it longer"
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


def test_a_job_array_trains_each_grid_point_and_summarises(cluster, tmp_path):
    """GRID in an ``sbatch --array`` job: one run directory per point, spread over both nodes,
    then ``python -m mnist_hpc.grid summary``."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("grid:\n  lr: [0.01, 0.003]\n  seed: [1, 2]\n")
    recipe = [*COMMON[:COMMON.index("--epochs")], "--epochs", "1", "--device", "cpu"]
    one_rank = ["--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=1"]
    job = submit(cluster, tmp_path, "slurm.sh", ["--array=0-3", *one_rank], recipe,
                 f",GRID={grid_file}")
    deadline = time.monotonic() + 300
    while cluster.run("squeue", "--noheader", f"--jobs={job}").stdout.strip():
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.5)

    run_dirs = [tmp_path / "results" / f"slurm-{job}_{task}" for task in range(4)]
    hosts = set()
    for task, run_dir in enumerate(run_dirs):
        metrics = read_metrics(run_dir)
        point = grid.load(grid_file).points[task]
        assert metrics["status"] == "completed", (task, metrics.get("error"))
        assert {key: metrics["config"][key] for key in point} == point, task
        hosts.update(metrics["world"]["hostnames"])
    assert hosts == set(cluster.nodes), "the array's tasks did not use both nodes"

    summary = grid.main(["summary", str(grid_file), *map(str, run_dirs)])
    assert summary == 0
    text = grid.summary(grid.load(grid_file), run_dirs)
    for lr, tasks in (("0.01", run_dirs[:2]), ("0.003", run_dirs[2:])):
        accs = [read_metrics(d)["final"]["test_acc"] for d in tasks]
        row = next(line.split() for line in text.splitlines() if line.startswith(f"lr={lr} "))
        assert row[1:3] == ["2/2", f"{np.mean(accs):.2f}"], text


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


def test_a_scaling_study_runs_inside_one_allocation(cluster, tmp_path):
    """``scaling allocation`` in a 2-node batch job: every point an srun step on the nodes it
    needs (1 node x 1 and 2 ranks, 2 nodes x 2 ranks), then ``scaling report``."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: alloc\nmode: strong\nranks: [1, 2, 4]\nranks_per_node: 2\n"
                     f"config: default\nbatch_size: 256\nepochs: 2\n"
                     f"train_args: --device cpu --backend gloo --limit 256 --timeout 60\n"
                     f"results_dir: {tmp_path / 'results'}\n")
    study = tmp_path / "results" / "s"
    job = cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=2", "--cpus-per-task=1", f"--chdir={REPO}",
        f"--output={tmp_path}/slurm-%j.out",
        "--wrap", f"{sys.executable} -m mnist_hpc.scaling allocation {sweep} --study-id s")
    info = cluster.wait_finished(job, timeout=300)
    assert_completed(cluster, info, tmp_path, job)
    manifest = json.loads((study / "study.json").read_text())
    assert manifest["target"] == "allocation-slurm"
    assert [(r["label"], r["exit_code"]) for r in manifest["runs"]] == [
        ("n1-r1-rep0", 0), ("n1-r2-rep0", 0), ("n2-r4-rep0", 0)], job_log(tmp_path, job)
    first, second = cluster.nodes
    for label, hosts in (("n1-r1-rep0", [first]), ("n1-r2-rep0", [first] * 2),
                         ("n2-r4-rep0", [first, first, second, second])):
        world = read_metrics(study / label)["world"]
        assert (world["launcher"], world["job_id"], world["hostnames"]) == (
            "slurm", job, hosts), (label, world)

    report = subprocess.run([sys.executable, "-m", "mnist_hpc.scaling", "report", str(study)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "Failed or incomplete" not in (study / "scaling.md").read_text()
