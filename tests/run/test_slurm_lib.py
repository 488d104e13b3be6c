"""run_step's decisions (jobs/slurm_lib.sh) with a stand-in job step and scontrol: when a
stopped run is requeued, and when it must not be. The real cluster tests
(test_slurm_job.py) cover the signal path end to end; these cover the branches it rarely
takes, in well under a second each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, clean_env

FAKE_SCONTROL = '#!/bin/bash\necho "$*" >> "$SCONTROL_LOG"\n'


def start(tmp_path: Path, step: str, restarts: int = 0, **knobs: str) -> subprocess.Popen:
    """``bash -c`` standing in for the batch shell: source slurm_lib.sh, run_step STEP."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    (bin_dir / "scontrol").chmod(0o755)
    env = clean_env(SLURM_JOB_ID="77", SLURM_RESTART_COUNT=str(restarts),
                    RESULTS_DIR=str(tmp_path / "results"), RUN_ID="slurm-77",
                    SCONTROL_LOG=str(tmp_path / "scontrol.log"), STEP=step, **knobs)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    script = 'set -euo pipefail; source jobs/slurm_lib.sh; run_step bash -c "$STEP"'
    return subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(tmp_path: Path, process: subprocess.Popen) -> tuple[int, str, list[str]]:
    """(exit status, output, scontrol calls)."""
    output, _ = process.communicate(timeout=30)
    log = tmp_path / "scontrol.log"
    return process.returncode, output, log.read_text().splitlines() if log.exists() else []


def run_step(tmp_path: Path, step: str, restarts: int = 0) -> tuple[int, str, list[str]]:
    return finish(tmp_path, start(tmp_path, step, restarts))


def signal_when_started(tmp_path: Path, signum: signal.Signals) -> tuple[int, str, list[str]]:
    """Start a step that traps ``signum``, then signal the batch shell, as Slurm does."""
    marker = tmp_path / "step-started"
    # the sleep must not hold the output pipe, and must end with the step
    process = start(tmp_path, f"sleep 20 >/dev/null 2>&1 & trap \"kill $!; exit 75\" "
                              f"{signum.name[3:]}; touch {marker}; wait")
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    return finish(tmp_path, process)


def test_exit_75_requeues(tmp_path):
    status, output, calls = run_step(tmp_path, "exit 75")
    assert (status, calls) == (75, ["requeue 77"]), output


def test_success_and_failure_do_not_requeue(tmp_path):
    assert run_step(tmp_path, "exit 0")[::2] == (0, [])
    assert run_step(tmp_path, "exit 1")[::2] == (1, [])


def test_killed_step_of_a_preempted_run_requeues(tmp_path):
    # srun's kill-on-bad-exit turned the slower rank's 75 into 143; the run says "preempted"
    metrics = tmp_path / "results" / "slurm-77" / "metrics.json"
    step = (f"mkdir -p {metrics.parent}; echo '{{\"status\": \"preempted\"}}' > {metrics}; "
            "exit 143")
    status, output, calls = run_step(tmp_path, step)
    assert (status, calls) == (75, ["requeue 77"]), output


def test_stale_status_from_an_earlier_attempt_is_ignored(tmp_path):
    metrics = tmp_path / "results" / "slurm-77" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"status": "preempted"}))
    an_hour_ago = time.time() - 3600
    os.utime(metrics, (an_hour_ago, an_hour_ago))
    status, output, calls = run_step(tmp_path, "exit 1")
    assert (status, calls) == (1, []), output


def test_usr1_is_forwarded_and_leads_to_a_requeue(tmp_path):
    status, output, calls = signal_when_started(tmp_path, signal.SIGUSR1)
    assert "SIGUSR1 received" in output, output
    assert (status, calls) == (75, ["requeue 77"]), output


def test_usr1_becomes_the_signal_the_template_names(tmp_path):
    """jobs/slurm_torchrun.sh: srun would take SIGTERM as "cancel the step" (no time for a
    checkpoint), so Slurm is asked (scancel --signal=TERM) to send it to the tasks instead."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(FAKE_SCONTROL)  # records its arguments alike
    (bin_dir / "scancel").chmod(0o755)
    step_pid = tmp_path / "step.pid"
    process = start(tmp_path, f"trap 'exit 75' TERM; echo $$ > {step_pid}.tmp; "
                              f"mv {step_pid}.tmp {step_pid}; sleep 20 >/dev/null 2>&1 & wait",
                    FORWARD_USR1_AS="TERM")
    deadline = time.monotonic() + 20
    while not step_pid.exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGUSR1)
    log = tmp_path / "scontrol.log"
    while not (log.exists() and "--signal=TERM 77" in log.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.kill(int(step_pid.read_text()), signal.SIGTERM)  # what Slurm then does to the tasks
    status, output, calls = finish(tmp_path, process)
    assert "SIGUSR1 received, sending SIGTERM to the tasks" in output, output
    assert (status, calls) == (75, ["--signal=TERM 77", "requeue 77"]), output


def test_cancelled_job_is_not_requeued(tmp_path):
    # scancel: SIGTERM to the batch shell, forwarded; the step checkpoints and exits 75
    status, output, calls = signal_when_started(tmp_path, signal.SIGTERM)
    assert "SIGTERM received" in output, output
    assert "stopped by SIGTERM after a checkpoint" in output, output
    assert (status, calls) == (75, []), output


def test_a_step_that_outlives_its_failed_run_is_ended(tmp_path):
    """A lost node: rank 0 has recorded the failure, srun still waits for the lost tasks."""
    metrics = tmp_path / "results" / "slurm-77" / "metrics.json"
    step = (f"trap '' TERM; mkdir -p {metrics.parent}; "
            f"echo '{{\"status\": \"failed\"}}' > {metrics}; sleep 60 >/dev/null 2>&1")
    started = time.monotonic()
    status, output, calls = finish(tmp_path, start(tmp_path, step, STEP_GRACE="2"))
    assert (status, calls) == (1, []), output
    assert "still waits for a task (a lost node?): ending the step" in output, output
    assert time.monotonic() - started < 20, output


@pytest.mark.parametrize("restarts", [20, 25])
def test_requeues_stop_at_max_restarts(tmp_path, restarts):
    status, output, calls = run_step(tmp_path, "exit 75", restarts=restarts)
    assert (status, calls) == (75, []), output
    assert "not requeueing" in output
