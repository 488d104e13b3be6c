"""Two nodes on one machine: torchrun's c10d rendezvous across network namespaces.

Each "node" (tests/netns.py) has its own network, hostname and /etc/hosts; gloo talks over
the veth pair between them. The run must say it spanned 2 nodes, list both hostnames and
train exactly what 2 ranks on one node train.
"""

from __future__ import annotations

import os
import subprocess
import time

import netns
import numpy as np
import pytest
from conftest import REPO, clean_env, only_run_dir, read_metrics
from launchers import COMMON, LIMIT, PYTHON, kill_group, trained


RDZV_PORT = 29400  # free by construction: the namespaces are new


@pytest.fixture(scope="module")
def nodes():
    reason = netns.unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"two-node test cannot run in CI: {reason}")
        pytest.skip(reason)
    with netns.two_nodes() as pair:
        yield pair


def test_torchrun_across_two_nodes_trains_like_one_node(nodes, tmp_path, tmp_path_factory):
    node0, node1 = nodes
    results = tmp_path / "results"  # one directory, seen from both nodes
    processes = []
    try:
        for node_rank, node in enumerate(nodes):
            command = [PYTHON, "-m", "torch.distributed.run", "--nnodes", "2",
                       "--nproc_per_node", "1", "--node_rank", str(node_rank),
                       "--rdzv_backend", "c10d", "--rdzv_id", node0.hostname,
                       "--rdzv_endpoint", f"{node0.address}:{RDZV_PORT}",
                       "-m", "mnist_hpc.train", *COMMON, "--shuffle",
                       "--results-dir", str(results)]
            processes.append(subprocess.Popen(
                node.command(command), cwd=REPO, text=True, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True,
                env=clean_env(GLOO_SOCKET_IFNAME=node.interface)))
            time.sleep(0.5)  # node 0 hosts the rendezvous store: let it start first
        outputs = []
        for process in processes:
            try:
                outputs.append(process.communicate(timeout=240)[0])
            except subprocess.TimeoutExpired:
                for other in processes:
                    kill_group(other.pid)
                pytest.fail("two-node run still going after 240 s:\n"
                            + "\n".join(p.communicate()[0] for p in processes))
    finally:
        for process in processes:
            kill_group(process.pid)
    report = "\n".join(f"--- {node.hostname} exit {process.returncode}:\n{output}"
                       for node, process, output in zip(nodes, processes, outputs))
    assert [process.returncode for process in processes] == [0, 0], report

    run_dir = only_run_dir(results)
    metrics = read_metrics(run_dir)
    world = metrics["world"]
    assert metrics["status"] == "completed", report
    assert world["world_size"] == 2 and world["local_world_size"] == 1
    assert world["nodes"] == 2
    assert sorted(world["hostnames"]) == sorted([node0.hostname, node1.hostname])
    assert world["master_addr"] not in (None, "localhost", "127.0.0.1", "::1")
    assert metrics["samples"] == {"train": LIMIT, "val": LIMIT, "test": LIMIT}

    one_node = trained("torchrun", True, tmp_path_factory)  # --standalone, 2 ranks
    assert read_metrics(one_node)["world"]["nodes"] == 1
    np.testing.assert_allclose(np.load(run_dir / "history.npy"),
                               np.load(one_node / "history.npy"), rtol=1e-5)
