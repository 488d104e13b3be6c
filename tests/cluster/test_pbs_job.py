"""jobs/polaris_ddp.pbs run the way PBS runs it on a job's first node.

PBS starts the script with bash in $HOME, with PBS_NODEFILE, PBS_JOBID, PBS_O_WORKDIR and
PBS_ACCOUNT set and the -v variables exported. Polaris's mpiexec is Cray PALS; here it is
MPICH hydra, whose options differ (-ppn, -genv; no --depth or --cpu-bind). The script takes
its launcher from MPIEXEC, so these tests hand it a small wrapper that records the exact
argv the template passed (the Polaris options, checked below), translates it to hydra's
spelling, drops the core binding (meaningless on a 2-core test machine) and execs the real
mpiexec: every rank then really runs through jobs/set_affinity_gpu_polaris.sh.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from conftest import REPO, clean_env, read_metrics

from mnist_hpc.job.port import job_port

SCRIPT = REPO / "jobs" / "polaris_ddp.pbs"
JOBID = "12345.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"

WRAPPER = '''#!{python}
"""mpiexec as Polaris's PALS is called, recorded, then run by MPICH hydra (or not: DRY)."""
import json, os, sys

args = sys.argv[1:]
with open({log!r}, "w") as log:
    json.dump(args, log)
if {dry!r}:
    sys.exit(0)
hydra = []
i = 0
while i < len(args) and args[i].startswith("-"):
    flag, value = args[i], args[i + 1]
    if flag == "-n":
        hydra += ["-n", value]
    elif flag == "--ppn":
        hydra += ["-ppn", value]
    elif flag == "--env":
        name, _, text = value.partition("=")
        hydra += ["-genv", name, text]
    elif flag not in ("--depth", "--cpu-bind"):
        sys.exit("fake mpiexec: unexpected option " + flag)
    i += 2
os.execv({real!r}, [{real!r}, *hydra, *args[i:]])
'''


def real_mpiexec() -> str:
    found = (shutil.which("mpiexec", path=str(Path(sys.executable).parent))
             or shutil.which("mpiexec"))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("mpiexec not found (pip install mpich)", pytrace=False)
        pytest.skip("mpiexec not found (pip install mpich)")
    return found


def make_wrapper(directory: Path, *, dry: bool) -> tuple[Path, Path]:
    """Write the recording mpiexec; returns (wrapper, file its argv is written to)."""
    log = directory / "mpiexec-argv.json"
    wrapper = directory / "mpiexec"
    wrapper.write_text(WRAPPER.format(python=sys.executable, log=str(log), dry=dry,
                                      real=real_mpiexec() if not dry else ""))
    wrapper.chmod(0o755)
    return wrapper, log


def pbs_env(tmp_path: Path, wrapper: Path, nodes: list[str], **extra: str) -> dict:
    """The environment PBS gives the job script, plus qsub -v variables in ``extra``."""
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(f"{node}\n" for node in nodes))
    env = clean_env(PBS_NODEFILE=str(nodefile), PBS_JOBID=JOBID, PBS_O_WORKDIR=str(REPO),
                    PBS_ACCOUNT="testproj", PBS_ENVIRONMENT="PBS_BATCH", PBS_QUEUE="debug",
                    MPIEXEC=str(wrapper), HOME=str(tmp_path))
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


@dataclass
class PBSJob:
    returncode: int
    stdout: str  # with stderr: what PBS's own <job name>.o<id> would hold
    stderr: str
    log_path: Optional[Path]  # the job log the script names on its first line
    log: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr + self.log


def run_pbs(env: dict, tmp_path: Path, timeout: float = 60) -> PBSJob:
    # PBS runs a spooled copy from $HOME: the script must find the repo by PBS_O_WORKDIR
    result = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=timeout)
    named = re.match(r"job log: (.+)\n", result.stdout)
    log_path = Path(named.group(1)) if named else None
    log = log_path.read_text() if log_path else ""
    if log_path and log_path.parent == REPO / "results":
        log_path.unlink()  # the default results directory: leave the repo as it was
    return PBSJob(result.returncode, result.stdout, result.stderr, log_path, log)


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_launch_line_uses_polaris_options(tmp_path):
    wrapper, log = make_wrapper(tmp_path, dry=True)
    env = pbs_env(tmp_path, wrapper, ["x3001c0s13b0n0.hsn.cm.polaris.alcf.anl.gov",
                                      "x3001c0s13b1n0.hsn.cm.polaris.alcf.anl.gov"])
    result = run_pbs(env, tmp_path)
    assert result.returncode == 0, result.output
    # the job's log beside the run directories, PBS's own file holding only its path
    assert result.log_path == REPO / "results" / "pbs-12345.out"
    assert result.stdout == f"job log: {result.log_path}\n"
    assert result.log.startswith("=== mnist_hpc on Polaris: job 12345."), result.log
    argv = json.loads(log.read_text())
    # 2 nodes x 4 GPUs, Polaris's binding, the affinity script between launcher and python
    assert argv[:10] == ["-n", "8", "--ppn", "4", "--depth", "8", "--cpu-bind", "depth",
                         "--env", "OMP_NUM_THREADS=1"]
    assert argv[10:14] == ["jobs/set_affinity_gpu_polaris.sh", "python", "-m", "mnist_hpc.train"]
    train = argv[14:]
    assert flag_value(train, "--config") == "default"
    assert flag_value(train, "--run-id") == "pbs-12345"
    assert flag_value(train, "--resume") == "auto"
    assert flag_value(train, "--results-dir") == str(REPO / "results")
    assert "--epochs" not in train  # the preset's epochs unless EPOCHS is given
    # rank 0's host is the first node file entry, as written; the port is the trainer's own
    # for this job id
    port = job_port({"PBS_JOBID": JOBID})
    assert f"x3001c0s13b0n0.hsn.cm.polaris.alcf.anl.gov:{port}" in result.log


def test_job_parameters_pass_through_literally(tmp_path):
    wrapper, log = make_wrapper(tmp_path, dry=True)
    marker = tmp_path / "evaluated"
    env = pbs_env(tmp_path, wrapper, ["node0"], CONFIG="seed", EPOCHS="3", NGPUS_PER_NODE="2",
                  RESULTS_DIR=str(tmp_path / "out"),
                  TRAIN_ARGS=f"--lr 0.01   --note $(touch {marker}) '*'",
                  PBS_JOBID="4242[7].polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov")
    result = run_pbs(env, tmp_path)
    assert result.returncode == 0, result.output
    assert result.log_path == tmp_path / "out" / "pbs-4242_7_.out"
    argv = json.loads(log.read_text())
    assert argv[:4] == ["-n", "2", "--ppn", "2"]
    assert flag_value(argv, "--config") == "seed"
    assert flag_value(argv, "--epochs") == "3"
    assert flag_value(argv, "--results-dir") == str(tmp_path / "out")
    assert flag_value(argv, "--run-id") == "pbs-4242_7_"  # array id sanitized
    # split on whitespace, nothing evaluated or globbed
    assert argv[-6:] == ["--lr", "0.01", "--note", "$(touch", f"{marker})", "'*'"]
    assert not marker.exists()


def test_an_array_task_trains_its_grid_point(tmp_path):
    """qsub -J 0-8 -v GRID=...: subjob 1 (PBS_ARRAY_INDEX) trains the grid's point 1 in a run
    directory of its own; GRID outside an array is refused before the launch."""
    wrapper, log = make_wrapper(tmp_path, dry=True)
    grid = "mnist_hpc/grids/lr_seeds.yaml"
    env = pbs_env(tmp_path, wrapper, ["node0"], GRID=grid, PBS_ARRAY_INDEX="1",
                  PBS_ARRAY_ID="4242[].polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
                  PBS_JOBID="4242[1].polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
                  TRAIN_ARGS="--seed 9")
    result = run_pbs(env, tmp_path)
    assert result.returncode == 0, result.output
    argv = json.loads(log.read_text())
    assert flag_value(argv, "--run-id") == "pbs-4242_1"
    assert argv[-4:] == ["--lr", "0.003", "--seed", "2"]  # the point wins over TRAIN_ARGS
    assert f"{grid}, point 1: --lr 0.003 --seed 2" in result.log, result.log

    log.unlink()
    result = run_pbs(pbs_env(tmp_path, wrapper, ["node0"], GRID=grid), tmp_path)
    assert result.returncode == 2 and "qsub -J 0-<points-1>" in result.stderr, result.output
    assert not log.exists(), "mpiexec ran although GRID had no array index"


@pytest.mark.parametrize("account", [None, "", "YOUR_PROJECT"])
def test_missing_account_fails_before_launch(tmp_path, account):
    wrapper, log = make_wrapper(tmp_path, dry=True)
    env = pbs_env(tmp_path, wrapper, ["node0"], PBS_ACCOUNT=account)
    result = run_pbs(env, tmp_path)
    assert result.returncode != 0
    assert result.log_path is None  # before the log moves: PBS's own file has the error
    assert "#PBS -A" in result.stderr and "qsub -A" in result.stderr, result.stderr
    assert not log.exists(), "mpiexec ran although the account check failed"


def test_a_bad_preflight_value_fails_before_launch(tmp_path):
    wrapper, log = make_wrapper(tmp_path, dry=True)
    result = run_pbs(pbs_env(tmp_path, wrapper, ["node0"], PREFLIGHT="yes"), tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "PREFLIGHT=yes: use 1" in result.stderr, result.stderr
    assert not log.exists(), "mpiexec ran although PREFLIGHT was bad"


def test_pbs_job_trains_with_two_ranks(tmp_path):
    wrapper, log = make_wrapper(tmp_path, dry=False)
    results = tmp_path / "results"
    env = pbs_env(tmp_path, wrapper, [socket.gethostname()], NGPUS_PER_NODE="2",
                  RESULTS_DIR=str(results), CONFIG="default", EPOCHS="1",
                  TRAIN_ARGS="--limit 512 --device cpu --backend gloo --timeout 60 --no-plots")
    result = run_pbs(env, tmp_path, timeout=300)
    output = result.log
    assert result.returncode == 0, result.output
    assert result.log_path == results / "pbs-12345.out"

    argv = json.loads(log.read_text())
    assert argv[:8] == ["-n", "2", "--ppn", "2", "--depth", "8", "--cpu-bind", "depth"]

    run_dir = results / "pbs-12345"
    assert f"Run directory: {run_dir}" in output
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["world"]["world_size"] == 2
    assert metrics["world"]["job_id"] in (JOBID, "12345")
    assert np.load(run_dir / "history.npy").shape == (1, 4)


def test_a_failed_preflight_stops_the_job_before_training(tmp_path):
    """PREFLIGHT=1: the doctor runs under the job's own mpiexec line (through the affinity
    script) and, finding no data, ends the job; the trainer never starts."""
    wrapper, log = make_wrapper(tmp_path, dry=False)
    results = tmp_path / "results"
    env = pbs_env(tmp_path, wrapper, [socket.gethostname()], NGPUS_PER_NODE="2",
                  RESULTS_DIR=str(results), PREFLIGHT="1",
                  TRAIN_ARGS=f"--device cpu --data-dir {tmp_path / 'no-data'} --quick",
                  # a job of its own: its port must not meet the training test's
                  PBS_JOBID=JOBID.replace("12345", "12346"))
    result = run_pbs(env, tmp_path, timeout=120)
    output = result.log
    assert result.returncode == 1, result.output
    argv = json.loads(log.read_text())  # the last launch: the doctor's
    assert argv[:8] == ["-n", "2", "--ppn", "2", "--depth", "8", "--cpu-bind", "depth"]
    assert argv[10:14] == ["jobs/set_affinity_gpu_polaris.sh", "python", "-m",
                           "mnist_hpc.doctor"]
    assert "FAIL data: ranks 0-1: data directory" in output, output
    assert "preflight failed with exit code 1: not training" in output, output
    assert (results / "doctor-pbs-12346.json").exists()
    assert not (results / "pbs-12346").exists()

