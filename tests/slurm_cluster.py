"""A real one-node Slurm cluster for end-to-end tests: munged, slurmctld and slurmd, private.

Everything lives under one temporary directory: its own munge key and socket, its own
slurm.conf (free ports, state, spool, logs), so a system Slurm or munge on the machine is
neither used nor disturbed. Clients reach it through ``SlurmCluster.env`` (SLURM_CONF).

Needs root (SlurmUser=root, slurmd launches jobs) and Debian's packages, installed by CI:
    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
Without them the tests skip, unless the variable CI is set: then they fail, so a broken CI
image cannot pass by skipping.

Use it from a test module:
    from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from conftest import clean_env

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "sinfo", "squeue", "scontrol", "scancel")
# sbin is often missing from a non-login PATH
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# a munge socket path must fit in sockaddr_un (108 bytes)
MAX_SOCKET_PATH = 100


def unavailable(reason: str) -> None:
    """Skip locally; fail in CI, where a missing prerequisite is a broken image."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def find_binaries() -> dict[str, str]:
    """Absolute paths of the daemons and clients, or skip/fail naming what is missing."""
    found = {name: shutil.which(name, path=SEARCH_PATH) for name in DAEMONS + CLIENTS}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        unavailable(f"Slurm test cluster needs {', '.join(missing)}: apt-get install -y "
                    "--no-install-recommends slurmctld slurmd slurm-client munge")
    if os.geteuid() != 0:
        unavailable("Slurm test cluster runs its daemons as root (SlurmUser=root)")
    return {name: path for name, path in found.items() if path}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


@dataclass
class SlurmCluster:
    """A running cluster; ``env`` is what its clients (sbatch, squeue, ...) need."""

    root: Path
    conf: Path
    node: str
    cpus: int
    env: dict[str, str]
    bin: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    extra_dirs: list[Path] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client (first argument: its name) against this cluster."""
        command = [self.bin.get(args[0], args[0]), *args[1:]]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: "
                               f"{result.stderr.strip()}\n{self.logs()}")
        return result

    def sbatch(self, *args: str, cwd: Optional[Path] = None) -> str:
        """Submit; returns the job id."""
        command = [self.bin["sbatch"], "--parsable", *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                timeout=30, cwd=cwd)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed ({result.returncode}): {result.stderr}")
        return result.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, Reason, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for(self, job_id: str, done: Callable[[dict[str, str]], bool], timeout: float,
                 what: str) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if done(info):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: no {what} within {timeout:.0f} s; last "
                                   f"state {info.get('JobState')} ({info.get('Reason')})\n"
                                   f"{self.logs()}")
            time.sleep(0.5)

    def wait_finished(self, job_id: str, timeout: float) -> dict[str, str]:
        return self.wait_for(job_id, lambda info: info.get("JobState") in FINISHED,
                             timeout, "end")

    def logs(self, lines: int = 30) -> str:
        """The daemons' last log lines, for failure messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel jobs, stop the daemons this cluster started, remove its files."""
        try:
            if self.processes and self.processes[-1].poll() is None:
                subprocess.run([self.bin["scancel"], "--user", "root"], env=self.env,
                               capture_output=True, timeout=10)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    queue = subprocess.run([self.bin["squeue"], "--noheader"], env=self.env,
                                           capture_output=True, text=True, timeout=10)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        # the reverse of the start order: slurmd, slurmctld, then munged
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()
        for path in [self.root, *self.extra_dirs]:
            shutil.rmtree(path, ignore_errors=True)


def _write_conf(cluster_root: Path, node: str, cpus: int, munge_socket: Path) -> Path:
    ctld_port, slurmd_port = free_port(), free_port()
    state, spool, log = cluster_root / "state", cluster_root / "spool", cluster_root / "log"
    for path in (state, spool, log):
        path.mkdir(parents=True, exist_ok=True)
    conf = cluster_root / "slurm.conf"
    conf.write_text(f"""\
# Written by tests/slurm_cluster.py: a private one-node cluster.
ClusterName=mnisttest
# the loopback address: the daemons need not resolve this machine's name
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
# free ports, so a system Slurm or another test session on this machine is left alone
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# job ids, and the rendezvous ports the jobs derive from them, differ between clusters
# started side by side (one per test process)
FirstJobId={ctld_port}
AuthType=auth/munge
CredType=cred/munge
# our own munged; cred_expire also sets how long a requeued job waits before it may start
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={cluster_root}/slurmctld.pid
SlurmdPidFile={cluster_root}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers: track processes by parent id, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
# finished jobs stay visible to `scontrol show job` (there is no accounting for sacct)
MinJobAge=600
KillWait=10
# trust the CPU count below even on a 1-core CI runner, so 2-task jobs can run
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait(check: Callable[[], bool], timeout: float, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        for process in cluster.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode} while "
                                   f"waiting for {what}\n{cluster.logs()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s\n{cluster.logs()}")
        time.sleep(0.2)


def start_slurm_cluster(base_dir: Path) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``base_dir``; wait until the node is idle.

    The caller must call ``stop()`` (the ``slurm_cluster`` fixture does); on a failure to
    start, everything started so far is stopped before the error propagates.
    """
    binaries = find_binaries()
    root = Path(base_dir).resolve()
    (root / "log").mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cpus = max(os.cpu_count() or 1, 2)

    munge_dir = root / "munge"
    extra_dirs = []
    if len(str(munge_dir / "munge.socket")) > MAX_SOCKET_PATH:
        munge_dir = Path(tempfile.mkdtemp(prefix="munge-"))
        extra_dirs.append(munge_dir)
    munge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    munge_dir.chmod(0o700)  # munged refuses a key or socket in a directory others can write
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = munge_dir / "munge.socket"

    conf = _write_conf(root, node, cpus, munge_socket)
    env = clean_env(SLURM_CONF=str(conf))
    cluster = SlurmCluster(root=root, conf=conf, node=node, cpus=cpus, env=env, bin=binaries,
                           extra_dirs=extra_dirs)
    try:
        cluster.processes.append(_start(
            [binaries["munged"], "--foreground", "--force", f"--socket={munge_socket}",
             f"--key-file={key}", f"--pid-file={munge_dir / 'munged.pid'}",
             f"--seed-file={munge_dir / 'munged.seed'}", f"--log-file={root / 'log' / 'munged.log'}"],
            root / "log" / "munged.out", env))
        _wait(munge_socket.exists, 20, "munge socket", cluster)
        cluster.processes.append(_start([binaries["slurmctld"], "-D", "-i", "-f", str(conf)],
                                        root / "log" / "slurmctld.out", env))
        _wait(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, 30,
              "slurmctld answering", cluster)
        cluster.processes.append(_start([binaries["slurmd"], "-D", "-f", str(conf)],
                                        root / "log" / "slurmd.out", env))

        def node_idle() -> bool:
            out = cluster.run("sinfo", "--noheader", "--Node", "--format=%T", check=False)
            return out.returncode == 0 and out.stdout.split() == ["idle"]

        _wait(node_idle, 60, f"idle node {node}", cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One cluster for the whole session (starting one takes a few seconds)."""
    cluster = start_slurm_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


if __name__ == "__main__":  # a quick manual check: python tests/slurm_cluster.py
    cluster = start_slurm_cluster(Path(tempfile.mkdtemp(prefix="slurm-")))
    try:
        job = cluster.sbatch("--ntasks=2", f"--output={cluster.root}/wrap-%j.out",
                             "--wrap", "srun hostname")
        print(cluster.wait_finished(job, 60)["JobState"],
              (cluster.root / f"wrap-{job}.out").read_text(), file=sys.stderr)
    finally:
        cluster.stop()
