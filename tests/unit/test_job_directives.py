"""The job templates' scheduler directives, checked against the rules of their systems, and
every script in jobs/ and envs/ checked by shellcheck.

PBS rules are ALCF Polaris's (docs.alcf.anl.gov/polaris/running-jobs): queues, node ranges
and walltime limits per queue, select=N:system=polaris, filesystems. A directive PBS or
Slurm would reject, or silently ignore because it follows a command, fails here instead of
in a queue.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from mnist_hpc.scaling.schedulers import (
    MIN_WALLTIME_S,
    POLARIS_QUEUES,
    is_slurm_time,
    parse_walltime,
)

PBS_SCRIPT = REPO / "jobs" / "polaris_ddp.pbs"
# the templates, not jobs/slurm_lib.sh, which they source
SLURM_SCRIPTS = sorted(p for p in (REPO / "jobs").glob("*.sh") if "\n#SBATCH " in p.read_text())
SHELL_SCRIPTS = sorted([*(REPO / "jobs").glob("*.sh"), *(REPO / "jobs").glob("*.pbs"),
                        *(REPO / "envs").glob("*.sh")])

POLARIS_FILESYSTEMS = {"home", "eagle", "grand"}
PBS_OPTIONS = {"-A", "-l", "-q", "-k", "-j", "-r", "-N", "-o", "-e", "-m", "-M", "-v", "-V", "-W"}
SBATCH_OPTIONS = {"job-name", "nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task",
                  "time", "output", "error", "open-mode", "signal", "requeue", "partition",
                  "account", "qos", "constraint", "mem", "exclusive"}


def directives(path: Path, prefix: str) -> list[tuple[int, str, list[str]]]:
    """(line number, comment line above it, tokens) of each directive; fails if one follows
    the first command (the scheduler stops reading there and would ignore it silently)."""
    found, previous, in_header = [], "", True
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(prefix + " "):
            assert in_header, f"{path.name}:{number}: {prefix} after the first command is ignored"
            found.append((number, previous, shlex.split(stripped[len(prefix):])))
        elif stripped and not stripped.startswith("#"):
            in_header = False
        previous = stripped
    assert found, f"no {prefix} directives in {path.name}"
    return found


def test_every_directive_has_a_comment_above_it():
    assert {p.name for p in SLURM_SCRIPTS} == {"slurm.sh", "slurm_torchrun.sh"}
    for path, prefix in [(PBS_SCRIPT, "#PBS"), *((p, "#SBATCH") for p in SLURM_SCRIPTS)]:
        for number, previous, _ in directives(path, prefix):
            assert previous.startswith("#") and not previous.startswith(prefix), (
                f"{path.name}:{number}: explain the directive in a comment on the line above")


def test_pbs_directives_follow_polaris_rules():
    options: dict[str, list[str]] = {}
    resources: dict[str, str] = {}
    for number, _, tokens in directives(PBS_SCRIPT, "#PBS"):
        assert len(tokens) == 2 and tokens[0] in PBS_OPTIONS, f"line {number}: {tokens}"
        option, value = tokens
        options.setdefault(option, []).append(value)
        if option == "-l":
            for item in value.split(","):
                name, _, text = item.partition("=")
                assert name not in resources, f"line {number}: {name} given twice"
                resources[name] = text

    assert options["-A"] == ["YOUR_PROJECT"], "the placeholder the script checks for"
    select = re.fullmatch(r"(\d+):system=polaris", resources["select"])
    assert select, f"select must be N:system=polaris, not {resources['select']}"
    nodes = int(select.group(1))
    assert resources["place"] == "scatter"
    assert resources["filesystems"]
    assert set(resources["filesystems"].split(":")) <= POLARIS_FILESYSTEMS

    (queue,) = options["-q"]
    assert queue in POLARIS_QUEUES
    rule = POLARIS_QUEUES[queue]
    assert rule.min_nodes <= nodes <= rule.max_nodes, (
        f"queue {queue} takes {rule.min_nodes}-{rule.max_nodes} nodes, not {nodes}")
    # the rules `scaling submit` checks a study against: H:MM:SS, within the queue's limits
    assert MIN_WALLTIME_S <= parse_walltime(resources["walltime"]) <= rule.max_walltime_s
    assert options["-k"] == ["doe"] and options["-j"] == ["oe"]


@pytest.mark.parametrize("path", SLURM_SCRIPTS, ids=lambda p: p.name)
def test_sbatch_directives_are_known_and_well_formed(path):
    values: dict[str, str] = {}
    for number, _, tokens in directives(path, "#SBATCH"):
        assert len(tokens) == 1 and tokens[0].startswith("--"), (
            f"{path.name}:{number}: one --option=value per line: {tokens}")
        name, _, value = tokens[0][2:].partition("=")
        assert name in SBATCH_OPTIONS, f"{path.name}:{number}: unexpected option --{name}"
        assert name not in values, f"{path.name}:{number}: --{name} given twice"
        values[name] = value

    assert is_slurm_time(values["time"]), f"--time={values['time']}"
    for name in ("nodes", "ntasks-per-node", "gpus-per-node", "cpus-per-task"):
        assert values[name].isdigit() and int(values[name]) >= 1, f"--{name}={values[name]}"
    assert re.fullmatch(r"B:USR1@\d+", values["signal"]), (
        "USR1 to the batch shell, which forwards it")
    assert "requeue" in values
    assert "%j" in values["output"]
    if path.name == "slurm.sh":  # one task per GPU
        assert values["ntasks-per-node"] == values["gpus-per-node"]
    else:  # one torchrun per node, which starts one worker per GPU
        assert values["ntasks-per-node"] == "1"


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        message = "shellcheck is not installed (apt-get install shellcheck)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI is set, so this is a failure", pytrace=False)
        pytest.skip(message)
    names = [str(path.relative_to(REPO)) for path in SHELL_SCRIPTS]
    assert "jobs/polaris_ddp.pbs" in names and "envs/polaris.sh" in names
    # -x follows `source` lines, resolved from the repo root as the jobs run
    result = subprocess.run([shellcheck, "-x", *names], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
