"""The job templates submitted with ``sbatch --nodes=2`` to a real two-node Slurm cluster
(``slurm_two_nodes`` in tests/slurm_cluster.py: one slurmd per network namespace, each node
with its own hostname and address), as a user submits them: the templates with the doctor
first, a job array, a scaling study in one allocation. Requeue and a lost node are in
test_slurm_two_node_failures.py, on a cluster of their own, so both files run side by side.

What only more than one node shows: srun placing ranks on both nodes, the rendezvous host
taken from the allocation's node list (srun) or torchrun's c10d rendezvous on the first node,
gloo across the nodes, metrics.json counting 2 nodes, the doctor's per-node rows, a job array
spread over the nodes, job steps on part of an allocation. The recipe is launchers.COMMON's
(keyed dropout: any world size trains alike), so every history must match one process's to
float noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, read_metrics
from launchers import LIMIT, trained
from slurm_cluster import slurm_two_nodes
from slurm_jobs import RECIPE, assert_completed, job_log, submit

from mnist_hpc import grid
from mnist_hpc.job.hostlist import parse as parse_hostlist

LAUNCHER = {"slurm.sh": "slurm", "slurm_torchrun.sh": "torchrun"}
# how each template gets 2 ranks on each 2-CPU node
SIZING = {
    "slurm.sh": ["--ntasks-per-node=2", "--cpus-per-task=1"],
    "slurm_torchrun.sh": ["--ntasks-per-node=1", "--cpus-per-task=2"],
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_two_nodes(tmp_path_factory.mktemp("slurm-two-nodes")) as two_nodes:
        yield two_nodes


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


def test_a_job_array_trains_each_grid_point_and_summarises(cluster, tmp_path):
    """GRID in an ``sbatch --array`` job: one run directory per point, spread over both nodes,
    then ``python -m mnist_hpc.grid summary``."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("grid:\n  lr: [0.01, 0.003]\n  seed: [1, 2]\n")
    recipe = ["--model", "seed", "--limit", "256", "--batch-size", "128", "--epochs", "1",
              "--device", "cpu", "--no-plots"]
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


def test_a_scaling_study_runs_inside_one_allocation(cluster, tmp_path):
    """``scaling allocation`` in a 2-node batch job: every point an srun step on the nodes it
    needs (1 and 2 nodes x 1 and 2 ranks each), then ``scaling report``."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"name: alloc\nmode: strong\nnodes: [1, 2]\nranks_per_node: [1, 2]\n"
                     f"config: default\nbatch_size: 256\nepochs: 2\n"
                     f"train_args: --device cpu --backend gloo --limit 256 --timeout 60 "
                     f"--no-plots\n"
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
        ("n1-r1-rep0", 0), ("n1-r2-rep0", 0), ("n2-r2-rep0", 0), ("n2-r4-rep0", 0)], \
        job_log(tmp_path, job)
    first, second = cluster.nodes
    for label, hosts in (("n1-r1-rep0", [first]), ("n1-r2-rep0", [first] * 2),
                         ("n2-r2-rep0", [first, second]),
                         ("n2-r4-rep0", [first, first, second, second])):
        world = read_metrics(study / label)["world"]
        assert (world["launcher"], world["job_id"], world["hostnames"]) == (
            "slurm", job, hosts), (label, world)

    report = subprocess.run([sys.executable, "-m", "mnist_hpc.scaling", "report", str(study)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "Failed or incomplete" not in (study / "scaling.md").read_text()
