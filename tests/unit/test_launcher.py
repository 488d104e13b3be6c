"""Launcher detection and rendezvous from crafted environments, one launcher at a time.

The environments below are written from each launcher's own documentation, never from
``layout.LAUNCHERS``, so a misspelled name in the table (a peer library read ``SLURM_LOCAL_ID``)
fails here instead of falling back to rank 0. Sources:

- torchrun: "Environment Variables" in the docstring of torch/distributed/run.py
  (https://docs.pytorch.org/docs/stable/elastic/run.html): LOCAL_RANK, RANK, GROUP_RANK,
  ROLE_RANK, LOCAL_WORLD_SIZE, WORLD_SIZE, ROLE_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
  TORCHELASTIC_RESTART_COUNT, TORCHELASTIC_MAX_RESTARTS, TORCHELASTIC_RUN_ID.
- MPICH hydra: PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS, PMI_FD, PMI_HOSTNAME, as
  ``mpiexec -n 2 env`` prints them under MPICH 5.0.2 hydra (test_distributed_e2e.py checks the
  names against the real launcher on every run).
- Cray PALS on ALCF Polaris: PMI_RANK, PMI_LOCAL_RANK (docs/polaris/running-jobs/using-gpus.md
  in argonne-lcf/user-guides), PMI_LOCAL_SIZE ("On Polaris specifically, you can use the
  environment variable PMI_LOCAL_RANK (as well as PMI_LOCAL_SIZE)",
  docs/polaris/data-science/frameworks/pytorch.md), PALS_LOCAL_RANKID
  (docs/polaris/data-science/profiling_dl.md), PALS_RANKID and PALS_NODEID (the same guides'
  Aurora pages, same PALS); PBS_NODEFILE lines and PBS_JOBID as in those guides
  (``x3005c0s7b0n0``, ``308834.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov``). PBS Pro writes
  the node file in the order of the chunks, one line per MPI process a chunk asks for
  (``mpiprocs``, default 1; https://tier1.cenaero.be/en/node/104), so a host may repeat.
- Open MPI: https://docs.open-mpi.org/en/v5.0.x/tuning-apps/environment-var.html,
  "Environment variables set for MPI applications": OMPI_COMM_WORLD_SIZE, _RANK, _LOCAL_SIZE,
  _LOCAL_RANK, OMPI_UNIVERSE_SIZE, OMPI_COMM_WORLD_NODE_RANK ("the relative rank of this
  process on this node looking across all jobs": not a node index, so Open MPI states no node).
- Slurm: srun(1) "OUTPUT ENVIRONMENT VARIABLES" (Slurm 22.05 man page): SLURM_PROCID ("The MPI
  rank (or relative process ID) of the current process"), SLURM_LOCALID ("Node local task ID
  for the process within a job"), SLURM_NTASKS, SLURM_STEP_ID (and the older SLURM_STEPID),
  SLURM_NODEID ("The relative node ID of the current node"), SLURM_STEP_NUM_NODES ("Number of
  nodes allocated to the step"), SLURM_TASKS_PER_NODE (e.g. "2(x3),1"),
  SLURM_STEP_TASKS_PER_NODE, SLURM_JOB_NODELIST, SLURM_STEP_NODELIST, SLURM_JOB_ID. sbatch(1)
  "OUTPUT ENVIRONMENT VARIABLES": the batch shell gets SLURM_PROCID, SLURM_LOCALID,
  SLURM_NTASKS, SLURM_NODEID, SLURM_TASKS_PER_NODE, SLURM_JOB_NUM_NODES ("Total number of
  nodes in the job's resource allocation") and SLURM_NNODES (the same, "for backwards
  compatibility") but no step id. ``env`` in a batch shell and in an srun task on the test
  cluster (Slurm 22.05.8) shows these, and in the task SLURM_TASKS_PER_NODE is the step's.
  Slurm's MPI plugins, set in every task of a step:
  mpi/pmi2 (src/plugins/mpi/pmi2/mpi_pmi2.c) PMI_FD, PMI_JOBID, PMI_RANK, PMI_SIZE,
  PMI2_SUN_PATH; mpi/cray_shasta (src/plugins/mpi/cray_shasta/mpi_cray_shasta.c) PALS_APID,
  PALS_RANKID, PALS_NODEID, PALS_SPOOL_DIR, PALS_APINFO, PMI_CONTROL_PORT.
"""

from __future__ import annotations

import re
import socket

import pytest

from mnist_hpc.errors import UsageError
from mnist_hpc.job import layout

# Every variable name the sources above give a launcher. Two are weaker: PALS_LOCAL_SIZE is
# not in the ALCF guides (job scripts for Aurora's PALS read it), and the mpich entry also
# accepts PALS's PMI_LOCAL_RANK/PMI_LOCAL_SIZE for PMI launchers that set those.
DOCUMENTED = {
    "torchrun": {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"},
    "pals": {"PMI_RANK", "PMI_SIZE", "PMI_LOCAL_RANK", "PMI_LOCAL_SIZE", "PALS_RANKID",
             "PALS_LOCAL_RANKID", "PALS_LOCAL_SIZE"},
    "mpich": {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "PMI_LOCAL_RANK",
              "PMI_LOCAL_SIZE"},
    "openmpi": {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE"},
    "slurm": {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
}

POLARIS_NODES = ["x3005c0s13b0n0.hsn.cm.polaris.alcf.anl.gov",
                 "x3005c0s19b0n0.hsn.cm.polaris.alcf.anl.gov"]
POLARIS_JOB = "308834.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"

# Rank 6 of 8, two nodes of 4: every field differs, so no name can stand in for another and no
# fallback (to 0, to the rank, to the world size) can pass.
TORCHRUN = {"RANK": "6", "LOCAL_RANK": "2", "GROUP_RANK": "1", "ROLE_RANK": "6",
            "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "ROLE_WORLD_SIZE": "8",
            "MASTER_ADDR": "node0.example.org", "MASTER_PORT": "29500",
            "TORCHELASTIC_RESTART_COUNT": "0", "TORCHELASTIC_MAX_RESTARTS": "0",
            "TORCHELASTIC_RUN_ID": "none"}
HYDRA = {"PMI_RANK": "6", "PMI_SIZE": "8", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "4",
         "PMI_FD": "9", "PMI_HOSTNAME": "node1"}
PALS = {"PMI_RANK": "6", "PMI_SIZE": "8", "PMI_LOCAL_RANK": "2", "PMI_LOCAL_SIZE": "4",
        "PALS_RANKID": "6", "PALS_LOCAL_RANKID": "2", "PALS_NODEID": "1",
        "PBS_JOBID": POLARIS_JOB}
OPENMPI = {"OMPI_COMM_WORLD_RANK": "6", "OMPI_COMM_WORLD_SIZE": "8",
           "OMPI_COMM_WORLD_LOCAL_RANK": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
           "OMPI_UNIVERSE_SIZE": "8", "OMPI_COMM_WORLD_NODE_RANK": "2"}
SRUN = {"SLURM_PROCID": "6", "SLURM_LOCALID": "2", "SLURM_NTASKS": "8", "SLURM_NPROCS": "8",
        "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_NODEID": "1",
        "SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
        "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        "SLURM_JOB_NODELIST": "nid[001-002]", "SLURM_STEP_NODELIST": "nid[001-002]",
        "SLURM_JOB_ID": "123456", "SLURM_JOBID": "123456"}
SBATCH_SHELL = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8",
                "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "4(x2)",
                "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
                "SLURM_JOB_NODELIST": "nid[001-002]", "SLURM_JOB_ID": "123456"}

RANK_6_OF_8 = dict(rank=6, local_rank=2, world_size=8, local_world_size=4)


def fields(env: layout.DistEnv) -> dict:
    return dict(rank=env.rank, local_rank=env.local_rank, world_size=env.world_size,
                local_world_size=env.local_world_size)


def test_the_launcher_table_uses_only_documented_names():
    for which, groups in layout.LAUNCHERS.items():
        used = {name for group in groups for name in group}
        assert used <= DOCUMENTED[which], (which, used - DOCUMENTED[which])


def test_no_launcher_is_one_process():
    env = layout.detect({"HOME": "/root", "PATH": "/usr/bin"})
    assert env == layout.DistEnv()
    assert (env.rank, env.world_size, env.launcher, env.backend) == (0, 1, "single", None)
    assert (env.nodes, env.node_rank) == (1, 0)
    assert env.is_main and not env.distributed


@pytest.mark.parametrize("environ, expected, node_layout", [
    (TORCHRUN, "torchrun", (2, 1)), (HYDRA, "mpich", (None, None)),
    (PALS, "pals", (None, 1)), (OPENMPI, "openmpi", (None, None)), (SRUN, "slurm", (2, 1)),
], ids=["torchrun", "mpich-hydra", "cray-pals-polaris", "openmpi", "slurm-srun"])
def test_each_launcher_gives_rank_local_rank_and_sizes(environ, expected, node_layout):
    """Nodes and node rank only where the launcher states them (MPI outside PBS does not)."""
    env = layout.detect(environ)
    assert env.launcher == expected
    assert fields(env) == RANK_6_OF_8
    assert (env.nodes, env.node_rank) == node_layout
    assert env.distributed and not env.is_main


def test_is_main_is_the_global_rank_not_the_local_one():
    env = layout.detect({**TORCHRUN, "RANK": "4", "LOCAL_RANK": "0"})
    assert env.local_rank == 0 and not env.is_main


def test_torchrun_standalone_single_process():
    env = layout.detect({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29500"})
    assert (env.launcher, env.world_size, env.distributed) == ("torchrun", 1, False)


def test_torchrun_gives_its_own_rendezvous_address():
    env = layout.detect(TORCHRUN)
    assert (env.master_addr, env.master_port) == ("node0.example.org", 29500)
    assert layout.rendezvous(env, TORCHRUN) == env


def test_cray_pals_on_polaris_reads_the_pbs_node_file(tmp_path, monkeypatch):
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(f"{node}\n" for node in POLARIS_NODES))
    environ = {**PALS, "PBS_NODEFILE": str(nodefile)}
    monkeypatch.setattr(layout, "_mpi_broadcast", lambda *a: pytest.fail("MPI not needed here"))
    env = layout.rendezvous(layout.detect(environ), environ)
    assert env.launcher == "pals" and fields(env) == RANK_6_OF_8
    assert env.master_addr == POLARIS_NODES[0]
    assert env.job_id == POLARIS_JOB
    assert env.master_port == layout._port({"PBS_JOBID": POLARIS_JOB})


def test_pals_node_index_comes_from_pals_nodeid(tmp_path):
    """Cray PALS names this node's index itself; without a node file the count is unknown."""
    env = layout.detect(PALS)
    assert (env.nodes, env.node_rank) == (None, 1)
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("".join(f"{node}\n" for node in POLARIS_NODES))
    env = layout.detect({**PALS, "PBS_NODEFILE": str(nodefile)})
    assert (env.nodes, env.node_rank) == (len(set(POLARIS_NODES)), 1)


def test_an_mpi_launch_within_one_node_is_one_node():
    env = layout.detect({**HYDRA, "MPI_LOCALNRANKS": "8"})
    assert (env.nodes, env.node_rank, env.local_world_size) == (1, 0, 8)


def test_pals_local_rank_from_either_name():
    """Each PALS name alone is enough (PALS_* when PMI_LOCAL_* is absent and back)."""
    only_pals = {k: v for k, v in PALS.items() if not k.startswith("PMI_LOCAL")}
    only_pals["PALS_LOCAL_SIZE"] = "4"
    assert fields(layout.detect(only_pals)) == RANK_6_OF_8
    only_pmi = {k: v for k, v in PALS.items() if k != "PALS_LOCAL_RANKID"}
    assert fields(layout.detect(only_pmi)) == RANK_6_OF_8


def test_unreadable_pbs_node_file_names_the_file(tmp_path):
    environ = {**PALS, "PBS_NODEFILE": str(tmp_path / "missing")}
    with pytest.raises(UsageError, match=r"PBS_NODEFILE .*missing.*MASTER_ADDR"):
        layout.rendezvous(layout.detect(environ), environ)


def test_slurm_rendezvous_on_the_first_node_of_the_step():
    env = layout.rendezvous(layout.detect(SRUN), SRUN)
    assert env.master_addr == "nid001"
    assert env.job_id == "123456"
    assert env.master_port == layout._port(SRUN)
    # a step on part of the allocation: its rank 0 is on the step's first node
    step = {**SRUN, "SLURM_JOB_NODELIST": "nid[001-004]", "SLURM_STEP_NODELIST": "nid[003-004]"}
    assert layout.rendezvous(layout.detect(step), step).master_addr == "nid003"
    no_step_list = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_NODELIST"}
    assert layout.rendezvous(layout.detect(no_step_list), no_step_list).master_addr == "nid001"


@pytest.mark.parametrize("nodelist, first", [
    ("gpu-[3-4]-ib", "gpu-3-ib"),                 # the old reader gave "gpu-3"
    ("rack[2-3]-node[05-06]", "rack2-node05"),
    ("login1,nid[007-008]", "login1"),
])
def test_slurm_rendezvous_on_host_lists_of_every_form(nodelist, first):
    environ = {**SRUN, "SLURM_STEP_NODELIST": nodelist}
    assert layout.rendezvous(layout.detect(environ), environ).master_addr == first


def test_unreadable_slurm_node_list_names_the_variable():
    environ = {**SRUN, "SLURM_STEP_NODELIST": "nid[003-001]"}
    with pytest.raises(UsageError, match=r"SLURM_STEP_NODELIST='nid\[003-001\]' is not a "
                                         r"Slurm host list: .*export MASTER_ADDR"):
        layout.rendezvous(layout.detect(environ), environ)


@pytest.mark.parametrize("tasks_per_node, node_id, local_world", [
    ("2(x3),1", "0", 2), ("2(x3),1", "2", 2), ("2(x3),1", "3", 1), ("4(x2)", "1", 4),
    ("3,1", "1", 1),
])
def test_slurm_local_world_size_from_tasks_per_node(tasks_per_node, node_id, local_world):
    tasks = sum(int(n) * int(r or 1) for n, r in re.findall(r"(\d+)(?:\(x(\d+)\))?",
                                                             tasks_per_node))
    environ = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": str(tasks),
               "SLURM_STEP_ID": "0", "SLURM_NODEID": node_id,
               "SLURM_TASKS_PER_NODE": tasks_per_node}
    assert layout.detect(environ).local_world_size == local_world


def test_slurm_step_layout_wins_over_the_job_layout():
    environ = {**SRUN, "SLURM_TASKS_PER_NODE": "8(x2)"}  # the job's; the step uses 4 per node
    assert layout.detect(environ).local_world_size == 4


# --- nodes and node rank: uneven layouts, from each launcher's documented variables ------------

# srun --ntasks=4 on two nodes, 3 tasks on the first and 1 on the second: world // local world
# gives 1 node on the first and 4 on the second
UNEVEN_SRUN = {"SLURM_NTASKS": "4", "SLURM_STEP_ID": "0", "SLURM_JOB_ID": "123456",
               "SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
               "SLURM_TASKS_PER_NODE": "3,1", "SLURM_STEP_TASKS_PER_NODE": "3,1",
               "SLURM_JOB_NODELIST": "nid[001-002]", "SLURM_STEP_NODELIST": "nid[001-002]"}


@pytest.mark.parametrize("procid, localid, nodeid, local_world", [
    ("0", "0", "0", 3), ("2", "2", "0", 3), ("3", "0", "1", 1),
])
def test_slurm_uneven_layout_takes_nodes_from_srun(procid, localid, nodeid, local_world):
    environ = {**UNEVEN_SRUN, "SLURM_PROCID": procid, "SLURM_LOCALID": localid,
               "SLURM_NODEID": nodeid}
    env = layout.detect(environ)
    assert (env.world_size, env.local_world_size) == (4, local_world)
    assert (env.nodes, env.node_rank) == (2, int(nodeid))


def test_slurm_step_node_count_wins_over_the_job_count():
    """A step on 2 of the job's 4 nodes; without the step's count, the job's (as for the
    task layout), SLURM_JOB_NUM_NODES before the older SLURM_NNODES."""
    environ = {**UNEVEN_SRUN, "SLURM_PROCID": "3", "SLURM_LOCALID": "0", "SLURM_NODEID": "1",
               "SLURM_JOB_NUM_NODES": "4", "SLURM_NNODES": "4"}
    assert layout.detect(environ).nodes == 2
    del environ["SLURM_STEP_NUM_NODES"]
    assert layout.detect(environ).nodes == 4
    environ["SLURM_JOB_NUM_NODES"] = "3"
    assert layout.detect(environ).nodes == 3
    del environ["SLURM_JOB_NUM_NODES"]
    assert layout.detect(environ).nodes == 4
    del environ["SLURM_NNODES"]
    assert (layout.detect(environ).nodes, layout.detect(environ).node_rank) == (None, 1)


def test_torchrun_node_rank_is_the_group_rank_and_its_nodes_are_even():
    """torchrun starts --nproc-per-node workers on every node: world // local world is exact.
    Sizes that do not divide cannot come from that, so the count stays unknown."""
    env = layout.detect({**TORCHRUN, "GROUP_RANK": "0", "RANK": "3", "LOCAL_RANK": "3"})
    assert (env.nodes, env.node_rank) == (2, 0)
    uneven = layout.detect({**TORCHRUN, "WORLD_SIZE": "6", "RANK": "5", "ROLE_WORLD_SIZE": "6"})
    assert (uneven.nodes, uneven.node_rank) == (None, 1)
    no_group = {k: v for k, v in TORCHRUN.items() if k != "GROUP_RANK"}
    assert (layout.detect(no_group).nodes, layout.detect(no_group).node_rank) == (2, None)


def test_openmpi_node_rank_variable_is_not_a_node_index():
    """OMPI_COMM_WORLD_NODE_RANK=2 is this process's rank among all on its node."""
    env = layout.detect({**OPENMPI, "OMPI_COMM_WORLD_NODE_RANK": "2"})
    assert (env.nodes, env.node_rank) == (None, None)


def write_nodefile(path, hosts: list[str]) -> str:
    path.write_text("".join(f"{host}\n" for host in hosts))
    return str(path)


def mpi_rank(mpi: dict, rank: int, world: int, local: int, local_world: int, node: int,
             **extra) -> dict:
    """``mpi`` (HYDRA or PALS) with the variables it has set to this rank's values."""
    values = {"PMI_RANK": rank, "PALS_RANKID": rank, "PMI_SIZE": world, "PALS_NODEID": node,
              "MPI_LOCALRANKID": local, "PMI_LOCAL_RANK": local, "PALS_LOCAL_RANKID": local,
              "MPI_LOCALNRANKS": local_world, "PMI_LOCAL_SIZE": local_world}
    return {**mpi, **{k: str(v) for k, v in values.items() if k in mpi}, **extra}


@pytest.mark.parametrize("mpi", [HYDRA, PALS], ids=["mpich-hydra", "cray-pals-polaris"])
def test_pbs_node_file_gives_distinct_hosts_and_this_hosts_place(tmp_path, mpi):
    """mpiexec -n 4 on 2 nodes, 3 ranks on the first: the node file lists the first host 3
    times. This machine's hostname stands in for one node, under its FQDN as on Polaris."""
    me = socket.gethostname().split(".")[0] + ".hsn.cm.polaris.alcf.anl.gov"
    other = "x3005c0s19b0n0.hsn.cm.polaris.alcf.anl.gov"
    on_first = mpi_rank(mpi, 1, 4, 1, 3, 0,
                        PBS_NODEFILE=write_nodefile(tmp_path / "a", [me, me, me, other]))
    env = layout.detect(on_first)
    assert (env.world_size, env.local_world_size, env.nodes, env.node_rank) == (4, 3, 2, 0)
    on_second = mpi_rank(mpi, 3, 4, 0, 1, 1,
                         PBS_NODEFILE=write_nodefile(tmp_path / "b", [other, other, other, me]))
    env = layout.detect(on_second)
    assert (env.world_size, env.local_world_size, env.nodes, env.node_rank) == (4, 1, 2, 1)


def test_pbs_node_file_without_this_host_gives_no_node_rank(tmp_path):
    """Hydra says nothing of nodes: this host's place in the node file is all there is."""
    environ = {**HYDRA, "PBS_NODEFILE": write_nodefile(tmp_path / "nodes", POLARIS_NODES)}
    env = layout.detect(environ)
    assert (env.nodes, env.node_rank) == (2, None)


@pytest.mark.parametrize("environ", [
    {**SRUN, "SLURM_NODEID": "2"},                    # node 2 of a 2-node step
    {**SRUN, "SLURM_STEP_NUM_NODES": "0"},
    {**TORCHRUN, "GROUP_RANK": "2"},                  # group 2 of 8 // 4 = 2 nodes
    {**TORCHRUN, "GROUP_RANK": "-1"},
], ids=["slurm-node-id", "slurm-no-nodes", "torchrun-group", "torchrun-negative"])
def test_node_rank_outside_the_node_count_is_an_error(environ):
    with pytest.raises(UsageError, match=r"inconsistent \w+ environment: .*node -?\d+ of \d+"):
        layout.detect(environ)


@pytest.mark.parametrize("name", ["SLURM_STEP_NUM_NODES", "SLURM_NODEID"])
def test_non_integer_slurm_node_variables_are_named(name):
    with pytest.raises(UsageError, match=rf"{name}='two' is not an integer"):
        layout.detect({**SRUN, name: "two"})


def test_slurm_array_task_is_part_of_the_job_id():
    env = layout.detect({**SRUN, "SLURM_ARRAY_TASK_ID": "7"})
    assert env.job_id == "123456_7"


def test_slurm_batch_shell_is_one_process():
    """sbatch's shell has SLURM_PROCID and SLURM_NTASKS of the whole job but is no task."""
    env = layout.detect(SBATCH_SHELL)
    assert (env.launcher, env.world_size, env.rank) == ("single", 1, 0)
    assert env.job_id == "123456"


def test_torchrun_inside_srun_wins():
    """srun starts one torchrun per node; torchrun's variables describe the workers."""
    srun_one_task_per_node = {**SRUN, "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
                              "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "1(x2)",
                              "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    env = layout.detect({**srun_one_task_per_node, **TORCHRUN})
    assert env.launcher == "torchrun" and fields(env) == RANK_6_OF_8


@pytest.mark.parametrize("mpi, expected", [(HYDRA, "mpich"), (OPENMPI, "openmpi")])
def test_mpiexec_inside_a_slurm_allocation_wins(mpi, expected):
    """mpiexec in a batch script starts its daemons with srun: the ranks see the daemons'
    step (one task per node) as well as their own MPI variables."""
    daemon_step = {**SRUN, "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_NTASKS": "2",
                   "SLURM_TASKS_PER_NODE": "1(x2)", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}
    for slurm in (daemon_step, SBATCH_SHELL):
        env = layout.detect({**slurm, **mpi})
        assert env.launcher == expected and fields(env) == RANK_6_OF_8


def test_srun_with_the_pmi2_plugin_is_slurm():
    """srun --mpi=pmi2 adds PMI_RANK and PMI_SIZE, no local rank: Slurm's variables decide."""
    environ = {**SRUN, "PMI_RANK": "6", "PMI_SIZE": "8", "PMI_FD": "7", "PMI_JOBID": "123456.0",
               "PMI2_SUN_PATH": "/var/spool/slurmd/sock.pmi2.123456.0"}
    env = layout.detect(environ)
    assert env.launcher == "slurm" and fields(env) == RANK_6_OF_8


def test_srun_with_the_cray_shasta_plugin_is_slurm():
    """srun --mpi=cray_shasta (HPE Cray EX) adds PALS_RANKID and PALS_NODEID, no size."""
    environ = {**SRUN, "PALS_APID": "123456.0", "PALS_RANKID": "6", "PALS_NODEID": "1",
               "PALS_SPOOL_DIR": "/var/spool/slurmd/mpi_cray_shasta/123456.0",
               "PALS_APINFO": "/var/spool/slurmd/mpi_cray_shasta/123456.0/apinfo",
               "PMI_CONTROL_PORT": "11001"}
    env = layout.detect(environ)
    assert env.launcher == "slurm" and fields(env) == RANK_6_OF_8


def test_a_partial_mpi_environment_outside_srun_is_an_error():
    """The deferral to Slurm needs srun's task of that very rank; anything else is half-set."""
    with pytest.raises(UsageError, match=r"PALS_RANKID is set but PMI_SIZE is not"):
        layout.detect({"PALS_RANKID": "6", "PALS_NODEID": "1"})
    other_rank = {**SRUN, "SLURM_PROCID": "1", "PMI_RANK": "6", "PMI_SIZE": "8"}
    with pytest.raises(UsageError, match=r"no local rank \(MPI_LOCALRANKID or PMI_LOCAL_RANK\)"):
        layout.detect(other_rank)


# --- bad environments: clear errors, never a silent rank 0 ----------------------------------------

@pytest.mark.parametrize("environ, present, absent", [
    ({"RANK": "1", "LOCAL_RANK": "1"}, "RANK", "WORLD_SIZE"),
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE", "RANK"),
    ({"PMI_RANK": "1", "MPI_LOCALRANKID": "1"}, "PMI_RANK", "PMI_SIZE"),
    ({"PMI_SIZE": "2"}, "PMI_SIZE", "PMI_RANK"),
    ({"OMPI_COMM_WORLD_RANK": "1"}, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ({"SLURM_PROCID": "1", "SLURM_STEP_ID": "0"}, "SLURM_PROCID", "SLURM_NTASKS"),
])
def test_half_set_environment_names_both_variables(environ, present, absent):
    with pytest.raises(UsageError) as error:
        layout.detect(environ)
    message = str(error.value)
    assert re.search(rf"\b{present}\b", message) and re.search(rf"\b{absent}\b", message)
    assert "\n" not in message


def test_missing_local_rank_is_an_error():
    with pytest.raises(UsageError, match=r"no local rank \(LOCAL_RANK\)"):
        layout.detect({"RANK": "1", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("name, value", [
    ("RANK", "one"), ("RANK", ""), ("WORLD_SIZE", "2.0"), ("LOCAL_RANK", "0x1"),
    ("MASTER_PORT", "port"),
])
def test_non_integer_values_are_named(name, value):
    environ = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
               name: value}
    with pytest.raises(UsageError, match=rf"{name}={re.escape(repr(value))} is not an integer"):
        layout.detect(environ)


def test_non_integer_slurm_node_id_is_named():
    with pytest.raises(UsageError, match=r"SLURM_NODEID='n1' is not an integer"):
        layout.detect({**SRUN, "SLURM_NODEID": "n1"})


@pytest.mark.parametrize("rank, world, local, local_world", [
    ("2", "2", "0", "2"),   # rank >= size
    ("-1", "2", "0", "2"),  # negative rank
    ("0", "0", "0", "1"),   # empty world
    ("1", "2", "2", "2"),   # local rank >= local size
    ("1", "2", "1", "4"),   # more ranks on a node than in the job
])
def test_inconsistent_ranks_are_errors(rank, world, local, local_world):
    environ = {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": local,
               "LOCAL_WORLD_SIZE": local_world}
    with pytest.raises(UsageError, match=r"inconsistent torchrun environment"):
        layout.detect(environ)


# --- MASTER_PORT ------------------------------------------------------------------------------

def test_port_from_the_job_id_differs_between_jobs_and_stays_in_range():
    ports = {layout._port({"SLURM_JOB_ID": str(job), "SLURM_STEP_ID": "0"})
             for job in range(1000, 1200)}
    assert len(ports) == 200  # jobs submitted close together never share a port
    # registered ports only, and below Linux's ephemeral range (32768-60999) that outgoing
    # connections take their ports from
    assert all(1024 <= port < 32768 for port in ports)
    one = layout.detect({**SRUN, "SLURM_JOB_ID": "123456"}).master_port
    other = layout.detect({**SRUN, "SLURM_JOB_ID": "123457"}).master_port
    assert one != other
    assert one == layout.detect({**SRUN, "SLURM_JOB_ID": "123456"}).master_port  # same on all ranks


def test_port_differs_between_steps_and_array_tasks():
    step0 = layout.detect(SRUN).master_port
    assert layout.detect({**SRUN, "SLURM_STEP_ID": "1"}).master_port != step0
    assert layout.detect({**SRUN, "SLURM_ARRAY_TASK_ID": "3"}).master_port != step0


def test_pbs_job_gives_a_port():
    env = layout.detect(PALS)
    assert env.master_port is not None and 1024 <= env.master_port < 32768


def test_explicit_master_port_wins():
    assert layout.detect({**SRUN, "MASTER_PORT": "12345"}).master_port == 12345
    assert layout.detect({**PALS, "MASTER_PORT": "23456"}).master_port == 23456


@pytest.mark.parametrize("port", ["0", "70000", "-5"])
def test_master_port_out_of_range_is_an_error(port):
    with pytest.raises(UsageError, match=rf"MASTER_PORT={port} is not a TCP port"):
        layout.detect({**SRUN, "MASTER_PORT": port})


def test_no_job_no_port():
    assert layout.detect(HYDRA).master_port is None


# --- rendezvous without a launcher address ------------------------------------------------------

def test_mpi_without_address_asks_rank_0_over_mpi(monkeypatch):
    calls = []

    def broadcast(addr, port):
        calls.append((addr, port))
        return "rank0-host", 23456

    monkeypatch.setattr(layout, "_mpi_broadcast", broadcast)
    env = layout.rendezvous(layout.detect(HYDRA), HYDRA)
    assert (env.master_addr, env.master_port) == ("rank0-host", 23456)
    assert calls == [(None, None)]


def test_mpi_with_address_and_port_needs_no_mpi(monkeypatch):
    monkeypatch.setattr(layout, "_mpi_broadcast", lambda *a: pytest.fail("MPI not needed here"))
    environ = {**OPENMPI, "MASTER_ADDR": "node0", "MASTER_PORT": "29512"}
    env = layout.rendezvous(layout.detect(environ), environ)
    assert (env.master_addr, env.master_port) == ("node0", 29512)


def test_slurm_without_any_address_says_what_to_export():
    environ = {k: v for k, v in SRUN.items() if "NODELIST" not in k}
    with pytest.raises(UsageError, match=r"export MASTER_ADDR"):
        layout.rendezvous(layout.detect(environ), environ)


def test_one_process_needs_no_rendezvous():
    env = layout.detect({})
    assert layout.rendezvous(env, {}) == env


# --- host lists, backend, threads ---------------------------------------------------------------

@pytest.mark.parametrize("hostlist, hosts", [
    ("nid[001-002,007]", ["nid001", "nid002", "nid007"]),
    ("nid001", ["nid001"]),
    ("node[08-11]", ["node08", "node09", "node10", "node11"]),
    ("a[1-3],b7", ["a1", "a2", "a3", "b7"]),
    ("gpu[1-2],login[01,03]", ["gpu1", "gpu2", "login01", "login03"]),
    ("x3005c0s13b0n0,x3005c0s19b0n0", ["x3005c0s13b0n0", "x3005c0s19b0n0"]),
])
def test_expand_hostlist(hostlist, hosts):
    assert layout.expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("dropped", [("MASTER_ADDR",), ("MASTER_PORT",),
                                     ("MASTER_ADDR", "MASTER_PORT")])
def test_hand_set_torchrun_variables_without_a_rendezvous_say_what_to_export(dropped):
    environ = {k: v for k, v in TORCHRUN.items() if k not in dropped}
    with pytest.raises(UsageError, match=rf"^RANK and WORLD_SIZE are set \(world size 8\) but "
                                         rf"{' and '.join(dropped)} not; export MASTER_ADDR"):
        layout.rendezvous(layout.detect(environ), environ)
