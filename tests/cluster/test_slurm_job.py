"""jobs/slurm.sh and jobs/slurm_torchrun.sh against a real one-node Slurm cluster
(tests/slurm_cluster.py): srun's tasks and their variables, every #SBATCH directive accepted
by sbatch, and a failed preflight stopping the job. Whole jobs that train (the doctor first,
requeue, a lost node, arrays) run on the two-node cluster (test_slurm_two_nodes.py).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from conftest import REPO
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (fixture)
from slurm_jobs import job_log


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
