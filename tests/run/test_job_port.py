"""``python -m mnist_hpc.job port``, which the job templates call for their rendezvous port:
the same port the trainer derives for the job, different ports for different jobs, and
nothing but exit 2 outside a job."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, clean_env

from mnist_hpc.job import layout
from mnist_hpc.job.port import FIRST_PORT, PORT_COUNT, job_port

POLARIS_JOB = "12345.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"


def cli_port(**environ: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_hpc.job", "port"], cwd=REPO,
                          env=clean_env(**environ), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("environ", [
    {"PBS_JOBID": POLARIS_JOB},
    {"SLURM_JOB_ID": "4242"},
    {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "3"},
])
def test_the_cli_prints_the_port_the_trainer_derives(environ):
    result = cli_port(**environ)
    assert result.returncode == 0, result.stderr
    # what layout.detect gives each rank of this job when the template exports no MASTER_PORT
    assert int(result.stdout) == layout._port(environ) == job_port(environ)


def test_different_jobs_get_different_ports_in_range():
    ports = [int(cli_port(SLURM_JOB_ID=str(job)).stdout) for job in (1000, 1001)]
    ports.append(int(cli_port(PBS_JOBID=POLARIS_JOB).stdout))
    assert len(set(ports)) == 3, ports
    # registered ports, below Linux's ephemeral range that outgoing connections take
    assert all(1024 <= FIRST_PORT <= port < FIRST_PORT + PORT_COUNT <= 32768 for port in ports)
    # jobs submitted one after another never collide, across the whole range
    numbered = {job_port({"SLURM_JOB_ID": str(job)}) for job in range(7000, 7000 + PORT_COUNT)}
    assert len(numbered) == PORT_COUNT


def test_outside_a_job_it_refuses_with_exit_2():
    result = cli_port()
    assert result.returncode == 2, result.stdout
    assert "no job id in the environment (PBS_JOBID or SLURM_JOB_ID)" in result.stderr
    assert result.stdout == ""


def test_a_wrong_command_prints_the_usage():
    result = subprocess.run([sys.executable, "-m", "mnist_hpc.job", "ports"], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "usage: python -m mnist_hpc.job port" in result.stderr
