"""jobs/slurm.sh and jobs/slurm_torchrun.sh submitted with ``sbatch --nodes=2`` to a real
two-node Slurm cluster (``slurm_two_nodes`` in tests/slurm_cluster.py: one slurmd per network
namespace, each node with its own hostname and address).

What only more than one node shows: srun placing one rank on each node, the rendezvous host
taken from the allocation's node list (srun) or torchrun's c10d rendezvous on the first node,
gloo across the nodes, and metrics.json counting 2 nodes. One CPU rank per node (the nodes
share this machine's cores); the recipe is the one launchers.trained runs in one process, so
the history must match it to float noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REPO, read_metrics
from launchers import COMMON, LIMIT, trained
from mnist_hpc.job.hostlist import parse as parse_hostlist
from slurm_cluster import slurm_two_nodes

LAUNCHER = {"slurm.sh": "slurm", "slurm_torchrun.sh": "torchrun"}
# launchers.trained's recipe (2 epochs of --limit 999: 500 + 499 images per split on 2 ranks)
RECIPE = " ".join([*COMMON, "--shuffle", "--timeout", "60"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with slurm_two_nodes(tmp_path_factory.mktemp("slurm-two-nodes")) as two_nodes:
        yield two_nodes


@pytest.mark.parametrize("script", ["slurm.sh", "slurm_torchrun.sh"])
def test_two_node_job_trains_like_one_process(cluster, tmp_path, tmp_path_factory, script):
    results = tmp_path / "results"
    # one rank per node: srun's task, or torchrun's only worker
    job = cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=0",
        f"--chdir={REPO}", f"--output={tmp_path}/slurm-%j.out",
        f"--export=ALL,CPU_ONLY=1,NPROC_PER_NODE=1,TRAIN_ARGS={RECIPE},RESULTS_DIR={results}",
        str(REPO / "jobs" / script))
    info = cluster.wait_finished(job, timeout=300)
    log_file = tmp_path / f"slurm-{job}.out"
    log = log_file.read_text(errors="replace") if log_file.exists() else "(no job log)"
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), (
        f"{log}\n{info}\n{cluster.logs()}")

    allocation = parse_hostlist(info["NodeList"])
    assert allocation == cluster.nodes, info
    metrics = read_metrics(results / f"slurm-{job}")
    world = metrics["world"]
    assert metrics["status"] == "completed", log
    assert (world["world_size"], world["local_world_size"], world["nodes"]) == (2, 1, 2), world
    assert (world["launcher"], world["job_id"]) == (LAUNCHER[script], job), world
    assert sorted(world["hostnames"]) == sorted(cluster.nodes), world
    # rank 0, and the rendezvous, on the allocation's first node
    assert world["hostnames"][0] == allocation[0], world
    assert world["master_addr"] == allocation[0], world
    assert metrics["samples"] == {"train": LIMIT, "val": LIMIT, "test": LIMIT}

    one_process = trained("single", True, tmp_path_factory)
    np.testing.assert_allclose(np.load(results / f"slurm-{job}" / "history.npy"),
                               np.load(one_process / "history.npy"), rtol=1e-5,
                               err_msg="two nodes differ from one process")
