"""Two "nodes" on one Linux machine, for multi-node tests: network namespaces joined by a veth
pair, each command run with its own hostname and its own /etc/hosts.

    with two_nodes() as (node0, node1):
        subprocess.Popen(node0.command(["hostname"]))   # prints node0-<suffix>

Each node is a network namespace with loopback up and one end of the veth pair
(10.77.0.1/24 and 10.77.0.2/24 by default). ``Node.command`` wraps a command in
``nsenter --net`` and ``unshare --uts --mount``: the new UTS namespace gets the node's
hostname, the new mount namespace a private bind mount of a temporary hosts file naming both
nodes over /etc/hosts. The machine's own hostname and /etc/hosts are never touched, and the
rest of the filesystem is shared, so both nodes see the same results directory, as on a
cluster. (``nsenter``, not ``ip netns exec``: the latter mounts a fresh /sys, without the
machine's cgroup mounts, and slurmd will not start without them.) Needs root (or
CAP_NET_ADMIN and CAP_SYS_ADMIN). Everything is removed on exit, even after a failure:
processes still inside a namespace are killed by pid, then the namespaces (and with them the
veth pair) are deleted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

SUBNET = "10.77.0"
NETNS_DIR = "/run/netns"  # where ``ip netns add`` puts a namespace's handle


@dataclass(frozen=True)
class Node:
    namespace: str  # network namespace name
    hostname: str
    address: str  # on the veth
    interface: str  # the veth end inside this namespace (for GLOO_SOCKET_IFNAME / NCCL_...)
    hosts_file: Path

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run on this node: its network, its hostname, its /etc/hosts."""
        setup = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
        return ["nsenter", f"--net={NETNS_DIR}/{self.namespace}", "unshare", "--uts", "--mount",
                "sh", "-c", setup, "sh", self.hostname, str(self.hosts_file), *argv]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> Optional[str]:
    """Why two nodes cannot be made here, or None if they can (tries a real namespace)."""
    missing = [tool for tool in ("ip", "nsenter", "unshare", "mount")
               if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (iproute2, util-linux)"
    probe = f"mnhprobe-{secrets.token_hex(3)}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          timeout=30)
    if done.returncode != 0:
        return f"ip netns add failed: {done.stderr.strip()} (needs root and network namespaces)"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    done = subprocess.run(["unshare", "--uts", "--mount", "true"], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        return f"unshare --uts --mount failed: {done.stderr.strip()}"
    return None


def kill_inside(namespace: str) -> None:
    """Kill the processes in ``namespace`` (only ever ones a test started there): at the end,
    or to lose a node mid-job."""
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                          timeout=30)
    for pid in done.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


@contextmanager
def two_nodes(prefix: str = "node") -> Iterator[tuple[Node, Node]]:
    """Two nodes ``{prefix}0-<suffix>`` and ``{prefix}1-<suffix>`` joined by a veth pair."""
    suffix = secrets.token_hex(3)
    namespaces = [f"mnh{i}-{suffix}" for i in range(2)]
    interfaces = [f"mnhv{i}-{suffix}" for i in range(2)]  # at most 15 characters
    hostnames = [f"{prefix}{i}-{suffix}" for i in range(2)]
    addresses = [f"{SUBNET}.{i + 1}" for i in range(2)]
    workdir = Path(tempfile.mkdtemp(prefix=f"netns-{suffix}-"))
    hosts_file = workdir / "hosts"
    hosts_file.write_text("127.0.0.1 localhost\n::1 localhost\n" + "".join(
        f"{address} {hostname}\n" for address, hostname in zip(addresses, hostnames)))
    created: list[str] = []
    try:
        for namespace in namespaces:
            _ip("netns", "add", namespace)
            created.append(namespace)
        _ip("link", "add", interfaces[0], "type", "veth", "peer", "name", interfaces[1])
        for namespace, interface, address in zip(namespaces, interfaces, addresses):
            _ip("link", "set", interface, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", interface)
            _ip("-n", namespace, "link", "set", interface, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield tuple(Node(namespace, hostname, address, interface, hosts_file)
                    for namespace, hostname, address, interface
                    in zip(namespaces, hostnames, addresses, interfaces))
    finally:
        for namespace in created:
            kill_inside(namespace)
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        # if the pair was made but not moved into a namespace, it is still here
        subprocess.run(["ip", "link", "del", interfaces[0]], capture_output=True, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
