"""Who am I in the job, from the launcher's environment alone: rank, local rank, world and
node layout, job id, rendezvous address and port (the port's formula: ``port``).

Torch-free and without side effects on import, so that ``--help`` and every launcher error
are answered before torch loads. mpi4py is imported only when an MPI launcher gives no
rendezvous address (and, as Cray MPICH requires, before anything touches CUDA); MPI is
finalized as soon as rank 0's address has been sent.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from ..errors import UsageError
from .hostlist import expand as expand_hostlist
from .port import job_id, job_port

# Ordered by evidence: a launcher nested in another (torchrun under srun, mpiexec inside a
# Slurm or PBS allocation) sets its own variables, and the innermost launcher wins.
# name: (rank, world size, local rank, local world size); each entry lists the names that
# launcher may use, first match wins.
LAUNCHERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "torchrun": (("RANK",), ("WORLD_SIZE",), ("LOCAL_RANK",), ("LOCAL_WORLD_SIZE",)),
    "pals": (("PALS_RANKID", "PMI_RANK"), ("PMI_SIZE",), ("PALS_LOCAL_RANKID", "PMI_LOCAL_RANK"),
             ("PMI_LOCAL_SIZE", "PALS_LOCAL_SIZE")),
    "mpich": (("PMI_RANK",), ("PMI_SIZE",), ("MPI_LOCALRANKID", "PMI_LOCAL_RANK"),
              ("MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")),
    "openmpi": (("OMPI_COMM_WORLD_RANK",), ("OMPI_COMM_WORLD_SIZE",),
                ("OMPI_COMM_WORLD_LOCAL_RANK",), ("OMPI_COMM_WORLD_LOCAL_SIZE",)),
    "slurm": (("SLURM_PROCID",), ("SLURM_NTASKS",), ("SLURM_LOCALID",), ()),
}
MPI_LAUNCHERS = ("pals", "mpich", "openmpi")
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job. ``is_main`` is the *global* rank 0.

    ``nodes`` and ``node_rank`` (this node's index, 0 to nodes - 1) are what the launcher
    states, or None where it states nothing (Open MPI, MPICH and PALS outside PBS): they are
    never guessed from the rank counts, which cannot tell 3 + 1 ranks from 2 + 2. The trainer
    records in metrics.json the count of distinct hostnames gathered from all ranks.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    nodes: Optional[int] = 1
    node_rank: Optional[int] = 0
    launcher: str = "single"
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    job_id: Optional[str] = None
    device: str = "cpu"
    backend: Optional[str] = None  # None: one process, no process group
    init_s: float = 0.0  # seconds spent in init_process_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> Optional[tuple[str, str]]:
    for name in names:
        if name in environ:
            return name, environ[name]
    return None


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not an integer; "
                         f"fix or unset it (it should be set by the launcher)")


def _tasks_on_node(tasks_per_node: str, node_id: int) -> Optional[int]:
    """SLURM_TASKS_PER_NODE ``2(x3),1`` lists the task count of each node in turn."""
    counts: list[int] = []
    for match in re.finditer(r"(\d+)(?:\(x(\d+)\))?", tasks_per_node):
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[node_id] if node_id < len(counts) else None


def _in_slurm_step(environ: Mapping[str, str]) -> bool:
    """A task of an srun step; the batch shell of a Slurm job has no step id."""
    return "SLURM_STEP_ID" in environ or "SLURM_STEPID" in environ


def _started_by_srun(environ: Mapping[str, str], rank_found: Optional[tuple[str, str]]) -> bool:
    """srun itself started this process as that rank. Slurm's MPI plugins set only part of an
    MPI environment (mpi/pmi2: PMI_RANK and PMI_SIZE, no local rank; mpi/cray_shasta:
    PALS_RANKID and PALS_NODEID, no size), while Slurm's own variables are whole."""
    return (_in_slurm_step(environ) and rank_found is not None
            and environ.get("SLURM_PROCID") == rank_found[1])


def detect(environ: Mapping[str, str]) -> DistEnv:
    """Rank, sizes and launcher from the environment; a single process if no launcher is seen.

    A half-set launcher (a rank without a world size, say) is an error, never a silent fall
    back to rank 0: a misdetected rank would train alone and hide the mistake.
    """
    for name, (rank_vars, size_vars, local_vars, local_size_vars) in LAUNCHERS.items():
        if name == "slurm" and not _in_slurm_step(environ):
            continue  # the batch shell of a Slurm job is one process, not a task of a step
        if name == "pals" and "PALS_RANKID" not in environ:
            continue
        rank_found = _first(environ, rank_vars)
        size_found = _first(environ, size_vars)
        if rank_found is None and size_found is None:
            continue
        if rank_found is None or size_found is None:
            if name in MPI_LAUNCHERS and _started_by_srun(environ, rank_found):
                continue
            present, absent = (rank_found, size_vars) if rank_found else (size_found, rank_vars)
            raise UsageError(f"{present[0]} is set but {absent[0]} is not: a half-set {name} "
                             f"environment; launch with {name} or unset {present[0]}")
        rank, world = _int(*rank_found), _int(*size_found)
        local = _first(environ, local_vars)
        local_rank = _int(*local) if local else (rank if world == 1 else None)
        local_size = _first(environ, local_size_vars)
        local_world = _int(*local_size) if local_size else None
        nodes, node_rank = _node_layout(name, environ)
        if name == "slurm":  # the step's layout; the job's if srun gave none
            layout = (environ.get("SLURM_STEP_TASKS_PER_NODE")
                      or environ.get("SLURM_TASKS_PER_NODE"))
            if layout:
                local_world = _tasks_on_node(layout, node_rank or 0)
        if local_rank is None:
            if name in MPI_LAUNCHERS and _started_by_srun(environ, rank_found):
                continue
            raise UsageError(f"{name} gives rank {rank} of {world} but no local rank "
                             f"({' or '.join(local_vars)}); set it or use another launcher")
        local_world = local_world or world
        if name == "torchrun" and world % local_world == 0:
            nodes = world // local_world  # torchrun starts --nproc-per-node ranks on every node
        if name in MPI_LAUNCHERS and local_world == world and nodes is None:
            nodes, node_rank = 1, 0  # every rank on this node
        if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world <= world
                and _node_within(node_rank, nodes)):
            raise UsageError(f"inconsistent {name} environment: rank {rank}, world size {world}, "
                             f"local rank {local_rank}, local size {local_world}, node "
                             f"{node_rank} of {nodes}; check the launcher's variables")
        return DistEnv(rank=rank, local_rank=local_rank, world_size=world,
                       local_world_size=local_world, nodes=nodes, node_rank=node_rank,
                       launcher=name, master_addr=environ.get("MASTER_ADDR"),
                       master_port=_port(environ), job_id=job_id(environ))
    return DistEnv(job_id=job_id(environ))


def _node_layout(name: str, environ: Mapping[str, str]) -> tuple[Optional[int], Optional[int]]:
    """(node count, this node's index) as far as the launcher states them.

    srun: the step's node count (the job's if srun gave none, as for the task layout) and
    SLURM_NODEID. torchrun: GROUP_RANK; its node count follows from the sizes in ``detect``.
    Cray PALS: PALS_NODEID, this node's index in the launch. MPI launchers in a PBS job: the
    node file's distinct hosts, in order, and this host's place among them (the job's nodes:
    the count of the launch where mpiexec spans the job, as jobs/polaris_ddp.pbs does). An MPI
    launch whose local size is the world size is one node (``detect``). Open MPI's
    OMPI_COMM_WORLD_NODE_RANK is no node index but this process's rank among all processes on
    its node, so it is not used.
    """
    if name == "slurm":
        count = _first(environ, ("SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES"))
        node_id = _first(environ, ("SLURM_NODEID",))
        return _int(*count) if count else None, _int(*node_id) if node_id else None
    if name == "torchrun":
        group = _first(environ, ("GROUP_RANK",))
        return None, _int(*group) if group else None
    pals_node = _first(environ, ("PALS_NODEID",)) if name == "pals" else None
    if name in MPI_LAUNCHERS and environ.get("PBS_NODEFILE"):
        hosts = list(dict.fromkeys(_pbs_hosts(environ)))  # distinct, in order
        me = socket.gethostname().split(".")[0]
        short = [host.split(".")[0] for host in hosts]  # the file may hold FQDNs
        if pals_node:
            return len(hosts), _int(*pals_node)
        return len(hosts), short.index(me) if me in short else None
    return None, _int(*pals_node) if pals_node else None


def _node_within(node_rank: Optional[int], nodes: Optional[int]) -> bool:
    """The node index lies in 0 .. nodes - 1, as far as either is known."""
    if (nodes is not None and nodes < 1) or (node_rank is not None and node_rank < 0):
        return False
    return node_rank is None or nodes is None or node_rank < nodes


def _pbs_hosts(environ: Mapping[str, str]) -> list[str]:
    """The lines of the PBS node file: one per MPI process, so a host may repeat."""
    path = environ["PBS_NODEFILE"]
    try:
        with open(path) as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise UsageError(f"cannot read PBS_NODEFILE {path}: {exc.strerror}; fix it, or unset "
                         f"it and export MASTER_ADDR")


def _port(environ: Mapping[str, str]) -> Optional[int]:
    """MASTER_PORT if set (checked), else the job's port (``port.job_port``)."""
    if "MASTER_PORT" not in environ:
        return job_port(environ)
    port = _int("MASTER_PORT", environ["MASTER_PORT"])
    if not 1 <= port <= 65535:
        raise UsageError(f"MASTER_PORT={port} is not a TCP port (1-65535); fix or unset it")
    return port


def rendezvous(env: DistEnv, environ: Mapping[str, str]) -> DistEnv:
    """Fill in MASTER_ADDR/PORT where the launcher gave none: the first host of the PBS node
    file or of the Slurm node list, else rank 0's hostname and a free port sent over MPI."""
    if not env.distributed:
        return env
    if env.launcher == "torchrun":  # torchrun always sets both; by hand they are easy to miss
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
        if missing:
            raise UsageError(f"RANK and WORLD_SIZE are set (world size {env.world_size}) but "
                             f"{' and '.join(missing)} not; export MASTER_ADDR (rank 0's host) "
                             f"and MASTER_PORT (a free port) on every rank, or launch with "
                             f"torchrun")
        return env
    addr, port = env.master_addr, env.master_port
    if addr is None and environ.get("PBS_NODEFILE"):
        addr = next(iter(_pbs_hosts(environ)), None)
    # srun's tasks: rank 0 runs on the step's first node, which is the job's first node only
    # when the step spans the whole allocation
    names = (("SLURM_STEP_NODELIST",) if env.launcher == "slurm" else ()) + (
        "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    nodelist = next((name for name in names if environ.get(name)), None)
    if addr is None and nodelist:
        try:
            addr = next(iter(expand_hostlist(environ[nodelist])), None)
        except ValueError as exc:
            raise UsageError(f"{nodelist}={environ[nodelist]!r} is not a Slurm host list: "
                             f"{exc}; export MASTER_ADDR (rank 0's host)")
    if (addr is None or port is None) and env.launcher in MPI_LAUNCHERS:
        addr, port = _mpi_broadcast(addr, port)
    if addr is None:
        raise UsageError(f"{env.launcher} started {env.world_size} ranks but gave no rendezvous "
                         f"address; export MASTER_ADDR (rank 0's host) and MASTER_PORT")
    return replace(env, master_addr=addr, master_port=port or DEFAULT_PORT)


def _mpi_broadcast(addr: Optional[str], port: Optional[int]) -> tuple[str, int]:
    try:
        from mpi4py import (
            MPI,  # must precede CUDA initialisation under Cray MPICH (GTL)
        )
    except ImportError as exc:
        raise UsageError(f"MPI launch without MASTER_ADDR needs mpi4py ({exc}); "
                         f"pip install mpi4py, or export MASTER_ADDR and MASTER_PORT")
    comm = MPI.COMM_WORLD
    mine = None
    if comm.Get_rank() == 0:
        mine = (addr or socket.gethostname(), port or _free_port())
    addr, port = comm.bcast(mine, root=0)
    # MPI's one job is done. Finalize now, on every rank together: MPICH's MPI_Finalize (which
    # mpi4py would run at exit) waits for all ranks, so a rank that raised would stay alive
    # with its gloo sockets open and its peers would wait for the collective timeout.
    # (MPICH leaves a SIGUSR1 handler of its own behind: train.main installs its preemption
    # handlers again right after the rendezvous.)
    MPI.Finalize()
    return addr, port


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def detect_leniently(environ: Mapping[str, str]) -> DistEnv:
    """``detect`` for printing bad-input errors once, before anything else is known: an
    environment too broken to name a rank counts as one process (rank 0), whose error must
    be printed; a process without a valid rank is most likely alone."""
    try:
        return detect(environ)
    except UsageError:
        return DistEnv()
