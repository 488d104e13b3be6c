"""``scaling allocation``: a sweep's points as job steps inside the current allocation, read
from the job's own variables (Slurm's node list, PBS's node file); points that do not fit are
refused before anything runs. The real run is in tests/cluster/test_slurm_two_nodes.py."""

from __future__ import annotations

import shlex

import pytest
from scaling_helpers import cli, write_sweep

SWEEP = """\
    name: alloc
    mode: strong
    ranks: [1, 2, 4]
    ranks_per_node: 2
    batch_size: 256
    epochs: 2
    results_dir: {results}
    """
JOB_VARIABLES = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NTASKS_PER_NODE",
                 "SLURM_CPUS_PER_TASK", "PBS_NODEFILE")


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    for name in JOB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return write_sweep(tmp_path, SWEEP.format(results=tmp_path / "results"))


def commands(capsys, sweep) -> list[list[str]]:
    code, out, err = cli(capsys, "allocation", sweep, "--dry-run", "--study-id", "s")
    assert code == 0, err
    return [shlex.split(line) for line in out.splitlines()]


def test_slurm_points_are_srun_steps_on_their_nodes(sweep, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[1-2]")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x2)")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    steps = commands(capsys, sweep)
    assert [step[:6] for step in steps] == [
        ["srun", f"--nodes={n}", f"--ntasks={r}", f"--ntasks-per-node={p}",
         "--cpus-per-task=8", "--kill-on-bad-exit=1"] for n, r, p in ((1, 1, 1), (1, 2, 2),
                                                                      (2, 4, 2))]
    assert steps[2][-4:] == ["--results-dir", str(sweep.parent / "results" / "s"),
                             "--run-id", "n2-r4-rep0"]
    assert not (sweep.parent / "results").exists()  # a dry run makes nothing


def test_pbs_points_use_the_first_nodes_of_the_node_file(sweep, tmp_path, monkeypatch, capsys):
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("x1\nx1\nx2\n")  # a line per rank slot on some sites
    monkeypatch.setenv("PBS_NODEFILE", str(nodefile))
    steps = commands(capsys, sweep)
    assert [step[:7] for step in steps] == [
        ["mpiexec", "-n", str(r), "--ppn", str(p), "--hostfile",
         str(tmp_path / "results" / "s" / "logs" / f"n{n}-r{r}-rep0.hosts")]
        for n, r, p in ((1, 1, 1), (1, 2, 2), (2, 4, 2))]


@pytest.mark.parametrize("variables, says", [
    ({}, "runs inside a batch job"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "a1"},
     "n2-r4-rep0 need more than the allocation's 1 node(s) (a1): ask for 2"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "a[1-2]", "SLURM_NTASKS_PER_NODE": "1(x2)"},
     "the allocation has 1 tasks per node"),
])
def test_a_study_that_does_not_fit_is_refused(sweep, monkeypatch, capsys, variables, says):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    code, _, err = cli(capsys, "allocation", sweep, "--study-id", "s")
    assert code == 2 and says in err, err
    assert not (sweep.parent / "results").exists()
