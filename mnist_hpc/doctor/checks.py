"""The doctor's verdicts: pure functions from every rank's gathered facts to findings.

Torch-free and deterministic, so every rank reaches the same verdict from the same gathered
list (and so the checks can be tested without launching anything). A rank's facts are the
dict ``probe.rank_facts`` builds, plus ``results`` (what it saw of rank 0's marker file) and
``time`` (its clock right after a barrier).

What counts as a problem, and why:
- GPUs: two ranks on one physical GPU (same host, same UUID or PCI bus id) run at half speed
  at best, and NCCL refuses them. A rank without a GPU while others have one trains on the CPU
  and holds every GPU rank back (and NCCL cannot include it). A local rank at or beyond the
  visible GPUs, where more than one is visible, means the node has fewer GPUs than ranks (the
  ranks wrap around onto shared GPUs). One visible GPU per rank is per-task binding (srun
  --gpus-per-task, CUDA_VISIBLE_DEVICES per rank): each rank's "GPU 0" is its own, and only
  the sharing check can tell whether it really is.
  GPUs a rank was given (device files, CUDA_VISIBLE_DEVICES, the scheduler's GPU lists) that
  its torch cannot see (a CPU-only build, a driver mismatch) would train on CPUs.
- Local ranks: on each host they must be 0..k-1, once each; a duplicate is how two ranks end
  up on one GPU and one set of cores.
- CPU affinity: overlap is a problem only when the launcher bound ranks to cores one by one
  (their core sets differ): then overlapping sets are a binding mistake (a --depth too large
  for the node, a wrong mapping), and the shared cores are time-sliced while others idle.
  When every rank on a host may use the same cores (no per-rank binding, or one cgroup for the
  whole job) overlap is how the OS is meant to spread them; what can still hurt is more
  compute threads than cores, a warning for CPU ranks (a GPU rank's threads mostly wait).
- Versions: any difference in Python, torch, CUDA, NCCL, mnist_hpc or the git commit
  between ranks (a node with another environment or another checkout).
- Data: each rank reads and verifies the four MNIST files in its own view of --data-dir.
- Results directory: rank 0 must be able to write it and every rank must see rank 0's file
  there, or results and checkpoints land on one node's local disk.
- Clocks: hosts whose clocks differ by more than a second make logs and timestamps across
  nodes unreadable (and point at a broken NTP on a node).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

FAIL, WARN = "fail", "warn"
CLOCK_TOLERANCE_S = 1.0
VERSION_KEYS = ("python", "torch", "cuda", "nccl", "mnist_hpc", "git_commit")
#: every check, in the order of the report; a check with no finding passed
CHECKS = {
    "local_ranks": "each host's local ranks are 0..k-1, once each",
    "gpu_sharing": "no two ranks on one GPU",
    "gpu_missing": "every rank has a GPU if any has",
    "gpu_count": "no local rank beyond the visible GPUs",
    "gpu_unseen": "torch sees the GPUs each rank was given",
    "cpu_binding": "no overlapping core sets between individually bound ranks",
    "cpu_threads": "CPU ranks' threads fit their hosts' cores",
    "versions": "the same software on every rank",
    "data": "MNIST present and verified on every rank",
    "results_dir": "results directory writable by rank 0 and shared by every rank",
    "clocks": f"hosts' clocks within {CLOCK_TOLERANCE_S:g} s",
}


@dataclass(frozen=True)
class Finding:
    check: str
    level: str  # FAIL: exit 1; WARN: reported, exit 0
    problem: str
    fix: str
    ranks: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compact_ranges(numbers: Iterable[int]) -> str:
    """0,1,2,3,8 -> "0-3,8"."""
    values = sorted(set(numbers))
    parts: list[str] = []
    start = previous = None
    for value in values + [None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    return ",".join(parts)


def _ranks(ranks: Iterable[int]) -> str:
    listed = sorted(ranks)
    return f"rank {listed[0]}" if len(listed) == 1 else f"ranks {compact_ranges(listed)}"


def node_ranks(hosts: list[str]) -> list[int]:
    """Each rank's node number: hosts numbered in order of first appearance."""
    order: dict[str, int] = {}
    return [order.setdefault(host, len(order)) for host in hosts]


def by_host(facts: list[dict]) -> dict[str, list[dict]]:
    hosts: dict[str, list[dict]] = {}
    for fact in facts:
        hosts.setdefault(fact["host"], []).append(fact)
    return hosts


def gpu_id(fact: dict) -> str | None:
    device = fact["device"]
    return (device.get("uuid") or device.get("bus_id")) if device["kind"] == "cuda" else None


def _local_ranks(facts: list[dict]) -> list[Finding]:
    found = []
    for host, ranks in by_host(facts).items():
        locals_ = sorted(f["local_rank"] for f in ranks)
        sizes = {f["local_world_size"] for f in ranks}
        if locals_ != list(range(len(ranks))) or sizes != {len(ranks)}:
            found.append(Finding(
                "local_ranks", FAIL,
                f"{host} runs {len(ranks)} ranks with local ranks {locals_} and local sizes "
                f"{sorted(sizes)}; expected 0..{len(ranks) - 1}, size {len(ranks)}",
                "start one task per GPU on each node with the launcher's own per-node count "
                "(srun --ntasks-per-node, mpiexec --ppn, torchrun --nproc-per-node) and do not "
                "set LOCAL_RANK or the launcher's rank variables by hand",
                [f["rank"] for f in ranks]))
    return found


def _gpus(facts: list[dict]) -> list[Finding]:
    found = []
    for host, ranks in by_host(facts).items():
        users: dict[str, list[int]] = {}
        for fact in ranks:
            if gpu_id(fact):
                users.setdefault(gpu_id(fact), []).append(fact["rank"])
        for gpu, sharing in users.items():
            if len(sharing) > 1:
                found.append(Finding(
                    "gpu_sharing", FAIL, f"{_ranks(sharing)} share one GPU ({gpu}) on {host}",
                    "give each rank its own GPU: as many GPUs per node as ranks per node "
                    "(--gpus-per-node, --ppn) and distinct local ranks; per-rank binding "
                    "(CUDA_VISIBLE_DEVICES by local rank) must use each GPU once", sharing))
    with_gpu = [f["rank"] for f in facts if f["device"]["kind"] == "cuda"]
    without = [f["rank"] for f in facts if f["device"]["kind"] != "cuda"]
    if with_gpu and without:
        found.append(Finding(
            "gpu_missing", FAIL, f"{_ranks(without)} see no GPU while {_ranks(with_gpu)} do",
            "run every rank on a GPU node and load the same CUDA modules everywhere; check "
            "CUDA_VISIBLE_DEVICES on the GPU-less ranks", without))
    beyond = [f for f in facts
              if f["device"]["kind"] == "cuda" and f["visible_gpus"] > 1
              and f["local_rank"] >= f["visible_gpus"]]
    if beyond:
        found.append(Finding(
            "gpu_count", FAIL,
            "; ".join(f"rank {f['rank']} has local rank {f['local_rank']} but {f['host']} shows "
                      f"it {f['visible_gpus']} GPUs" for f in beyond),
            "start at most one rank per visible GPU on each node (ranks per node = GPUs per "
            "node)", [f["rank"] for f in beyond]))
    unseen = [f for f in facts if f.get("unseen_gpus")]
    if unseen:
        found.append(Finding(
            "gpu_unseen", FAIL,
            "; ".join(f"rank {f['rank']} on {f['host']} was given GPUs "
                      f"({'; '.join(f['unseen_gpus'])}) but torch sees none" for f in unseen),
            "install a torch build for these GPUs and their driver (nvidia-smi shows the "
            "driver's CUDA version) on every node, or train with --device cpu on purpose",
            [f["rank"] for f in unseen]))
    return found


def _cpus(facts: list[dict]) -> list[Finding]:
    found = []
    for host, ranks in by_host(facts).items():
        sets = [frozenset(f["cpus"]) for f in ranks]
        if len(set(sets)) > 1:  # bound one by one: any shared core is a binding mistake
            for i, first in enumerate(ranks):
                for second, cores in zip(ranks[i + 1:], sets[i + 1:]):
                    shared = sets[i] & cores
                    if shared:
                        pair = [first["rank"], second["rank"]]
                        found.append(Finding(
                            "cpu_binding", FAIL,
                            f"ranks {pair[0]} and {pair[1]} on {host} are bound to overlapping "
                            f"cores ({compact_ranges(shared)})",
                            "bind each rank to its own cores: mpiexec --cpu-bind depth --depth "
                            "N with N x ranks per node <= cores, or srun --cpu-bind=cores with "
                            "--cpus-per-task", pair))
        cpu_ranks = [f for f in ranks if f["device"]["kind"] == "cpu"]
        cores = frozenset().union(*sets)
        threads = sum(f["threads"] for f in cpu_ranks)
        if cpu_ranks and threads > len(cores):
            found.append(Finding(
                "cpu_threads", WARN,
                f"{len(cpu_ranks)} CPU ranks on {host} run {threads} threads on {len(cores)} "
                f"cores", "set OMP_NUM_THREADS (or --cpus-per-task) so that threads x ranks "
                "per node <= cores", [f["rank"] for f in cpu_ranks]))
    return found


def _versions(facts: list[dict]) -> list[Finding]:
    found = []
    for key in VERSION_KEYS:
        seen: dict[Any, list[int]] = {}
        for fact in facts:
            seen.setdefault(fact["versions"].get(key), []).append(fact["rank"])
        if len(seen) > 1:
            detail = "; ".join(f"{value} on {_ranks(ranks)}" for value, ranks in seen.items())
            # the odd ones out: all but the most common value (rank 0's on a tie)
            usual = max(seen.values(), key=lambda ranks: (len(ranks), 0 in ranks))
            odd = sorted(r for ranks in seen.values() if ranks is not usual for r in ranks)
            found.append(Finding(
                "versions", FAIL, f"{key} differs: {detail}",
                "use one software environment on every node: the same modules and venv "
                "(envs/*.sh) and one checkout on a shared filesystem", odd))
    return found


def _files(facts: list[dict]) -> list[Finding]:
    found = []
    for check, fix in (
        ("data", "give every node the same verified MNIST: --data-dir on a shared filesystem, "
                 "or copy data/MNIST/raw/ to each node's --data-dir"),
        ("results_dir", "put --results-dir on a filesystem rank 0 can write and every node "
                        "mounts (not /tmp or a node-local disk)"),
    ):
        problems: dict[str, list[int]] = {}
        for fact in facts:
            if fact[check]:
                problems.setdefault(fact[check], []).append(fact["rank"])
        for problem, ranks in problems.items():
            found.append(Finding(check, FAIL, f"{_ranks(ranks)}: {problem}", fix, ranks))
    return found


def _clocks(facts: list[dict]) -> list[Finding]:
    first = {host: ranks[0] for host, ranks in by_host(facts).items()}
    if len(first) < 2:
        return []
    early = min(first.values(), key=lambda f: f["time"])
    late = max(first.values(), key=lambda f: f["time"])
    spread = late["time"] - early["time"]
    if spread <= CLOCK_TOLERANCE_S:
        return []
    return [Finding("clocks", FAIL,
                    f"clocks differ by {spread:.1f} s between {early['host']} and {late['host']}",
                    "ask the site to fix time synchronisation (NTP/chrony) on the late or early "
                    "node, or exclude it", [early["rank"], late["rank"]])]


def evaluate(facts: list[dict]) -> list[Finding]:
    """Every finding, in the order of CHECKS."""
    found = (_local_ranks(facts) + _gpus(facts) + _cpus(facts) + _versions(facts)
             + _files(facts) + _clocks(facts))
    order = list(CHECKS)
    return sorted(found, key=lambda f: order.index(f.check))


def failed(findings: list[Finding]) -> bool:
    return any(f.level == FAIL for f in findings)
