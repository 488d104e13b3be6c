"""A real Slurm cluster for end-to-end tests: munged, slurmctld and slurmd, private.

Everything lives under one temporary directory: its own munge key and socket, its own
slurm.conf (free ports, state, spool, logs), so a system Slurm or munge on the machine is
neither used nor disturbed. Clients reach it through ``SlurmCluster.env`` (SLURM_CONF).
By default it is one node, this machine; ``hosts`` makes one node per host, such as the
network-namespace nodes of tests/netns.py (``slurm_two_nodes``): slurmctld and the clients
run on the first, one ``slurmd -N <name>`` on each, munged on this machine (its socket is a
file, reachable from every namespace).

Needs root (SlurmUser=root, slurmd launches jobs) and Debian's packages, installed by CI:
    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
Two nodes need iproute2 and util-linux (nsenter, unshare) too. Without them the tests skip,
unless the variable CI is set: then they fail, so a broken CI image cannot pass by skipping.

Use it from a test module:
    from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)
or, for two nodes, from a module-scoped fixture (its test file then runs on one xdist worker):
    with slurm_two_nodes(tmp_path_factory.mktemp("slurm")) as cluster: yield cluster
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import netns
import pytest
from conftest import clean_env
from slurm_conf import Host, ThisMachine, write_conf

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


@dataclass
class SlurmCluster:
    """A running cluster; ``env`` is what its clients (sbatch, squeue, ...) need."""

    root: Path
    conf: Path
    hosts: Sequence[Host]
    cpus: int  # per node
    env: dict[str, str]
    bin: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    extra_dirs: list[Path] = field(default_factory=list)

    @property
    def node(self) -> str:
        """The first node: it runs slurmctld, the clients and each job's batch script."""
        return self.hosts[0].hostname

    @property
    def nodes(self) -> list[str]:
        return [host.hostname for host in self.hosts]

    def client(self, *args: str) -> list[str]:
        """The command line of a Slurm client (first argument: its name), on the first node."""
        return self.hosts[0].command([self.bin.get(args[0], args[0]), *args[1:]])

    def run(self, *args: str, check: bool = True,
            timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a Slurm client (first argument: its name) against this cluster."""
        command = self.client(*args)
        result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: "
                               f"{result.stderr.strip()}\n{self.logs()}")
        return result

    def sbatch(self, *args: str, cwd: Optional[Path] = None) -> str:
        """Submit; returns the job id."""
        command = self.client("sbatch", "--parsable", *args)
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

    def release_requeued(self, job_id: str, started: Callable[[], bool],
                         timeout: float = 120) -> None:
        """Wait for a requeued job's next attempt (``started`` tells it, say from its log).
        A requeued job waits out the credential lifetime (cred_expire=10 s here); releasing
        it sooner races slurmd's revoked credential ("Job credential revoked": job FAILED),
        so it is released 15 s after the requeue. The job passes through short-lived states
        meanwhile (its first attempt's end among them): wait on ``started``, not the state."""
        requeued = time.monotonic()
        while not started():
            info = self.job(job_id)
            if (info.get("JobState") == "PENDING" and info.get("Reason") == "BeginTime"
                    and time.monotonic() - requeued > 15):
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
            if time.monotonic() - requeued > timeout:
                raise TimeoutError(f"job {job_id}: no next attempt within {timeout:.0f} s: "
                                   f"{info}\n{self.logs()}")
            time.sleep(0.5)

    def restart_node(self, index: int) -> None:
        """Start the slurmd of node ``index`` again (after a test killed it) and wait until
        every node is idle."""
        host = self.hosts[index]
        slurmd = next(i for i, p in enumerate(self.processes)
                      if p.args[-4:] == ["-N", host.hostname, "-f", str(self.conf)])
        old = self.processes[slurmd]
        if old.poll() is None:
            old.kill()
        old.wait(timeout=10)
        self.processes[slurmd] = _start_slurmd(self, host)
        _wait(self.nodes_idle, 120, f"node {host.hostname} idle again", self)

    def nodes_idle(self) -> bool:
        out = self.run("sinfo", "--noheader", "--Node", "--format=%T", check=False)
        return out.returncode == 0 and out.stdout.split() == ["idle"] * len(self.hosts)

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
                subprocess.run(self.client("scancel", "--user", "root"), env=self.env,
                               capture_output=True, timeout=10)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    queue = subprocess.run(self.client("squeue", "--noheader"), env=self.env,
                                           capture_output=True, text=True, timeout=10)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass
        # the reverse of the start order: slurmds, slurmctld, then munged
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


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _start_slurmd(cluster: SlurmCluster, host: Host) -> subprocess.Popen:
    return _start(
        host.command([cluster.bin["slurmd"], "-D", "-N", host.hostname, "-f", str(cluster.conf)]),
        cluster.root / "log" / f"slurmd-{host.hostname}.out", cluster.env)


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


def short_if_needed(path: Path, suffix_length: int, made: list[Path]) -> Path:
    """``path``, or a new short directory (added to ``made``, removed at stop) where ``path``
    plus ``suffix_length`` more bytes would exceed MAX_SOCKET_PATH."""
    if len(str(path)) + suffix_length <= MAX_SOCKET_PATH:
        return path
    short = Path(tempfile.mkdtemp(prefix=f"{path.name}-"))
    made.append(short)
    return short


def start_slurm_cluster(base_dir: Path, hosts: Optional[Sequence[Host]] = None,
                        cpus: Optional[int] = None) -> SlurmCluster:
    """Start munged, slurmctld and a slurmd per host (default: this machine) under
    ``base_dir``, ``cpus`` per node (default: this machine's, at least 2); wait until every
    node is idle.

    The caller must call ``stop()`` (the ``slurm_cluster`` fixture does); on a failure to
    start, everything started so far is stopped before the error propagates.
    """
    binaries = find_binaries()
    root = Path(base_dir).resolve()
    (root / "log").mkdir(parents=True, exist_ok=True)
    hosts = list(hosts or [ThisMachine()])
    cpus = cpus or max(os.cpu_count() or 1, 2)

    # Unix socket paths must stay under 108 bytes: where the test's directory is too deep,
    # munged's socket and the slurmds' spool (slurmstepd's sockets are
    # <spool>/<node>/<node>_<job id>.<step id>, step ids up to 10 digits) go to short ones
    extra_dirs = []
    munge_dir = short_if_needed(root / "munge", len("/munge.socket"), extra_dirs)
    longest = max(len(host.hostname) for host in hosts)
    spool = short_if_needed(root / "spool", 2 * longest + 20, extra_dirs)
    munge_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    munge_dir.chmod(0o700)  # munged refuses a key or socket in a directory others can write
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = munge_dir / "munge.socket"

    conf = write_conf(root, spool, hosts, cpus, munge_socket)
    env = clean_env(SLURM_CONF=str(conf))
    cluster = SlurmCluster(root=root, conf=conf, hosts=hosts, cpus=cpus, env=env, bin=binaries,
                           extra_dirs=extra_dirs)
    try:
        cluster.processes.append(_start(
            [binaries["munged"], "--foreground", "--force", f"--socket={munge_socket}",
             f"--key-file={key}", f"--pid-file={munge_dir / 'munged.pid'}",
             f"--seed-file={munge_dir / 'munged.seed'}",
             f"--log-file={root / 'log' / 'munged.log'}"],
            root / "log" / "munged.out", env))
        _wait(munge_socket.exists, 20, "munge socket", cluster)
        cluster.processes.append(_start(
            hosts[0].command([binaries["slurmctld"], "-D", "-i", "-f", str(conf)]),
            root / "log" / "slurmctld.out", env))
        _wait(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, 30,
              "slurmctld answering", cluster)
        for host in hosts:
            cluster.processes.append(_start_slurmd(cluster, host))
        _wait(cluster.nodes_idle, 60, f"idle nodes {', '.join(cluster.nodes)}", cluster)
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


@contextmanager
def slurm_two_nodes(base_dir: Path) -> Iterator[SlurmCluster]:
    """A cluster of two network-namespace nodes (tests/netns.py), 2 CPUs each: each node has
    its own hostname, address and /etc/hosts, as a job's tasks see them. On exit the daemons
    are stopped, whatever is left in a namespace is killed and the namespaces are deleted."""
    find_binaries()  # skips (or fails in CI) before any namespace is made
    reason = netns.unavailable()
    if reason is not None:
        unavailable(f"two-node Slurm test cluster: {reason}")
    with netns.two_nodes(prefix="slurm") as nodes:
        cluster = start_slurm_cluster(base_dir, hosts=nodes, cpus=2)
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
