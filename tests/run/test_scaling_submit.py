"""mnist_hpc.scaling.submit and .schedulers: the exact qsub/sbatch commands (recorded by fake
qsub and sbatch), and the rules a study must meet (refused whole, nothing submitted). A study
on a real Slurm cluster: tests/cluster/test_scaling_submit_slurm.py."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from conftest import REPO
from scaling_helpers import (  # noqa: F401  (fixtures)
    POLARIS,
    calls,
    cli,
    fake_qsub,
    fake_sbatch,
    write_sweep,
)

from mnist_hpc.errors import UsageError
from mnist_hpc.scaling.schedulers import is_slurm_time, parse_walltime

# --- dry runs -------------------------------------------------------------------------------

def test_pbs_dry_run_prints_one_qsub_per_run(tmp_path, capsys, fake_qsub):
    sweep = write_sweep(tmp_path, POLARIS.format(results=tmp_path / "results"))
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "pbs", "--dry-run",
                         "--study-id", "s1")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("qsub ")]
    assert len(lines) == 5
    study_dir = tmp_path / "results" / "s1"
    assert f"mkdir -p {study_dir}" in out
    for line, ranks, nodes, per_node, queue in zip(
            lines, [1, 2, 4, 8, 16], [1, 1, 1, 2, 4], [1, 2, 4, 4, 4],
            ["debug", "debug", "debug", "debug", "preemptable"]):
        argv = shlex.split(line)
        options = dict(zip(argv[1:-1:], argv[2:]))
        assert f"select={nodes}:system=polaris" in argv
        assert "walltime=0:20:00" in argv
        assert options["-q"] == queue and options["-A"] == "MYPROJ"
        assert ("-r" in argv) == (queue == "preemptable")
        assert argv[-1] == str(REPO / "jobs" / "polaris_ddp.pbs")
        exported = dict(item.split("=", 1) for item in options["-v"].split(","))
        assert exported == {
            "CONFIG": "default", "EPOCHS": "3", "NGPUS_PER_NODE": str(per_node),
            "TRAIN_ARGS": "--batch-size 512 --batch-mode global --precision bf16",
            "RESULTS_DIR": str(study_dir)}
        assert ranks == nodes * per_node
    assert calls(fake_qsub, "qsub") == []  # a dry run submits nothing
    assert not study_dir.exists()


def test_slurm_dry_run_checks_with_test_only_and_submits_nothing(tmp_path, capsys,
                                                                  fake_sbatch):
    sweep = write_sweep(tmp_path, f"""\
        name: sl
        mode: weak
        ranks: [1, 2]
        batch_size: 64
        epochs: 2
        results_dir: {tmp_path / 'results'}
        slurm: {{partition: debug, time: "0:10:00", cpu_only: true, cpus_per_task: 1}}
        """)
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "slurm", "--dry-run",
                         "--study-id", "s2")
    assert code == 0, err
    assert "checked: sbatch --test-only" in out
    lines = [shlex.split(line) for line in out.splitlines() if line.startswith("sbatch ")]
    assert len(lines) == 2
    study_dir = tmp_path / "results" / "s2"
    for argv, tasks in zip(lines, [1, 2]):
        options = dict(zip(argv[1:], argv[2:]))
        assert options["--nodes"] == "1" and options["--ntasks-per-node"] == str(tasks)
        assert options["--gpus-per-node"] == "0" and options["--cpus-per-task"] == "1"
        assert options["--partition"] == "debug" and options["--time"] == "0:10:00"
        assert options["--output"] == f"{study_dir}/slurm-%j.out"
        export = next(a for a in argv if a.startswith("--export="))[len("--export="):]
        assert export.split(",") == [
            "ALL", "CONFIG=default", "EPOCHS=2",
            "TRAIN_ARGS=--batch-size 64 --batch-mode per-rank", f"RESULTS_DIR={study_dir}",
            "CPU_ONLY=1"]
        assert argv[-1] == str(REPO / "jobs" / "slurm.sh")
    made = calls(fake_sbatch, "sbatch")
    assert len(made) == 2 and all("--test-only" in c and "--parsable" not in c for c in made)

    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "slurm", "--dry-run",
                         "--no-test-only")
    assert code == 0 and "format only" in out
    assert len(calls(fake_sbatch, "sbatch")) == 2


# --- refusals -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, extra, message", [
    ({"queue": "debug"}, [], "3 nodes, but Polaris queue debug takes 1-2 nodes"),
    ({"walltime": '"1:00"'}, [], "walltime '1:00' is not H:MM:SS"),
    ({"walltime": '"0:90:00"'}, [], "is not H:MM:SS"),
    ({"walltime": '"2:00:00"', "queue": "debug"}, [], "exceeds queue debug's limit of 1:00:00"),
    ({"walltime": '"0:02:00"'}, [], "under the 5-minute minimum"),
    ({"account": "null"}, [], "no account"),
    ({"queue": "debug-scaling"}, [], "allows 1 (1 job running/accruing/queued per user)"),
    ({"queue": "small"}, [], "'small' is not a Polaris queue you can submit to"),
    ({"queue": "prod"}, [], "Polaris queue prod takes 10-496 nodes"),
])
def test_pbs_refuses_the_whole_study(tmp_path, capsys, fake_qsub, change, extra, message):
    settings = {"queue": "debug-scaling", "walltime": '"0:20:00"', "account": "MYPROJ"}
    settings.update(change)
    sweep = write_sweep(tmp_path, f"""\
        mode: strong
        nodes: [1, 3]
        ranks_per_node: 4
        results_dir: {tmp_path / 'results'}
        pbs:
          queue: {settings['queue']}
          walltime: {settings['walltime']}
          account: {settings['account']}
        """)
    for dry in ([], ["--dry-run"]):
        code, out, err = cli(capsys, "submit", sweep, "--scheduler", "pbs", *dry, *extra)
        assert code == 2, (out, err)
        assert "refused, nothing submitted" in err and message in err, err
    assert calls(fake_qsub, "qsub") == []
    assert not (tmp_path / "results").exists()


def test_account_on_the_command_line_satisfies_the_rule(tmp_path, capsys, fake_qsub):
    sweep = write_sweep(tmp_path, POLARIS.format(results=tmp_path / "r").replace(
        "account: MYPROJ", "account: null"))
    assert cli(capsys, "submit", sweep, "--scheduler", "pbs", "--dry-run")[0] == 2
    code, out, _ = cli(capsys, "submit", sweep, "--scheduler", "pbs", "--dry-run",
                       "--account", "OTHER")
    assert code == 0 and out.count("-A OTHER") == 5


def test_slurm_refuses_when_test_only_fails_for_any_run(tmp_path, capsys, fake_sbatch):
    sweep = write_sweep(tmp_path, f"""\
        mode: strong
        nodes: [1, 2]
        ranks_per_node: 2
        results_dir: {tmp_path / 'results'}
        """)
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "slurm")
    assert code == 2
    assert "run n2-r4-rep0: sbatch --test-only refused it" in err
    assert "Requested node configuration is not available" in err
    assert all("--test-only" in c for c in calls(fake_sbatch, "sbatch"))  # none submitted
    assert not (tmp_path / "results").exists()


def test_slurm_time_format_is_checked_without_sbatch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    sweep = write_sweep(tmp_path, 'mode: strong\nranks: [1]\nslurm: {time: "1h"}\n')
    code, _, err = cli(capsys, "submit", sweep, "--scheduler", "slurm", "--dry-run")
    assert code == 2 and "slurm.time '1h' is not a Slurm time" in err


@pytest.mark.parametrize("text, seconds", [
    ("0:30:00", 1800), ("1:00:00", 3600), ("00:05:00", 300), ("72:00:00", 259200),
    ("1:00", None), ("0:90:00", None), ("0:5:00", None), ("0:30:00.5", None), ("1800", None),
    ("1:00:00:00", None), ("", None), (None, None)])
def test_pbs_walltime_is_held_to_h_mm_ss(text, seconds):
    if seconds is None:
        with pytest.raises(UsageError, match="is not H:MM:SS"):
            parse_walltime(text)
    else:
        assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text, valid", [
    ("30", True), ("30:00", True), ("1:00:00", True), ("2-12", True), ("2-12:30", True),
    ("2-12:30:00", True), ("1h", False), ("1.5", False), ("1:2:3:4", False), ("-5", False),
    ("", False)])
def test_slurm_time_forms(text, valid):
    assert is_slurm_time(text) == valid


# --- e2e: a 2-point study on a real one-node Slurm cluster --------------------------------

