"""The slurm.conf of a private test cluster (tests/slurm_cluster.py), and the hosts it names.

A host is where a node runs: this machine (``ThisMachine``, the one-node cluster) or a
network-namespace node of tests/netns.py (``netns.Node``), anything with a hostname, an
address and a way to run a command there. The first host also runs slurmctld.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence


class Host(Protocol):
    """Where a node runs: its name, its address, and how to run a command there."""

    hostname: str
    address: str

    def command(self, argv: list[str]) -> list[str]: ...


@dataclass(frozen=True)
class ThisMachine:
    """The machine itself as the one node, over loopback (the daemons need not resolve it)."""

    hostname: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    address: str = "127.0.0.1"

    def command(self, argv: list[str]) -> list[str]:
        return argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def write_conf(cluster_root: Path, spool: Path, hosts: Sequence[Host], cpus: int,
               munge_socket: Path) -> Path:
    """slurm.conf under ``cluster_root`` (with its state and log directories; the slurmds'
    spool under ``spool``): one node per host, ``cpus`` each, slurmctld on the first,
    authenticated by that munged."""
    ctld_port, slurmd_port = free_port(), free_port()
    state, log = cluster_root / "state", cluster_root / "log"
    for path in (state, log, *(spool / host.hostname for host in hosts)):
        path.mkdir(parents=True, exist_ok=True)
    nodes = "\n".join(f"NodeName={host.hostname} NodeAddr={host.address} CPUs={cpus} "
                      "RealMemory=1000 State=UNKNOWN" for host in hosts)
    conf = cluster_root / "slurm.conf"
    conf.write_text(f"""\
# Written by tests/slurm_cluster.py: a private {len(hosts)}-node cluster.
ClusterName=mnisttest
# addresses given, so the daemons need not resolve the node names
SlurmctldHost={hosts[0].hostname}({hosts[0].address})
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
# %n: each node's slurmd (all of them on this machine's filesystem) has its own
SlurmdSpoolDir={spool}/%n
SlurmctldPidFile={cluster_root}/slurmctld.pid
SlurmdPidFile={cluster_root}/slurmd-%n.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd-%n.log
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
{nodes}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


