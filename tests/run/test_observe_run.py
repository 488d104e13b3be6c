"""Seeing inside a run: per-rank timing and stragglers, FLOPs, the step log, TensorBoard, the
profile, stack dumps on demand and on a hung collective, per-rank logs, the report's columns.

The distributed tests are real 2-rank jobs (torchrun and mpiexec, gloo on CPU) with a fault
from tests/fault_injection.py: a rank that sleeps in each step, or one that stops (SIGSTOP).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from conftest import REPO, clean_env, only_run_dir, read_metrics
from launchers import PYTHON, SMALL


def test_one_rank_records_its_figures(single_run):
    run_dir, output = single_run
    metrics = read_metrics(run_dir)
    assert metrics["model"]["flops_per_sample"] > 0
    for epoch in metrics["epochs"]:
        ranks = epoch["ranks"]
        for name in ("data_s", "compute_s", "eval_s"):
            assert ranks[name]["min"] == ranks[name]["max"] > 0 and ranks[name]["std"] == 0
        assert ranks["comm_s"] is None  # one process: no all-reduce to wait for
        assert 0 < ranks["compute_s"]["max"] <= epoch["train_s"]
        assert ranks["slowest"]["rank"] == 0 and ranks["stragglers"] == []
        assert ranks["peak_memory_bytes"] > 2**20
        assert epoch["tflops"] > 0 and epoch["mfu"] is None  # CPU: no known peak
    assert re.search(r"Epoch 1: .*peak memory [\d,]+ MiB; [\d.]+ TFLOP/s$", output, re.M), output


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """One process, 2 epochs, with the step log and a profile; SIGUSR2 sent while it runs."""
    results = tmp_path_factory.mktemp("observe-single")
    command = [PYTHON, "-m", "mnist_hpc.train", *SMALL, "--epochs", "2", "--log-every", "3",
               "--profile", "2", "--rank-logs", "--results-dir", str(results)]
    process = subprocess.Popen(command, cwd=REPO, env=clean_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(results.glob("*/ranks/rank-0.txt")) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGUSR2)  # the stack file exists: faulthandler listens
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return only_run_dir(results), output


def test_steps_jsonl_holds_every_nth_step(single_run):
    run_dir, _ = single_run
    lines = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [3, 6, 9, 12, 15, 18]  # 10 steps an epoch
    assert [line["epoch"] for line in lines] == [0, 0, 0, 1, 1, 1]
    for line in lines:
        assert 0 < line["loss"] < 10 and line["lr"] == 0.003 and line["samples_per_s"] > 0
    assert lines[-1]["loss"] < lines[0]["loss"]


def test_tensorboard_events_when_installed(single_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run_dir, _ = single_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [3, 6, 9, 12, 15, 18]
    assert [e.step for e in events.Scalars("epoch/val_acc")] == [0, 1]


def test_profile_is_a_chrome_trace_of_the_second_epoch(single_run):
    run_dir, _ = single_run
    trace = json.loads((run_dir / "profile" / "rank-0.trace.json").read_text())
    names = [event.get("name") for event in trace["traceEvents"]]
    assert names.count("Optimizer.step#Adam.step") == 2  # --profile 2: two steps recorded
    assert names.count("aten::convolution_backward") == 2 * 2  # two conv layers a step


def test_sigusr2_dumps_the_stack_without_stopping_the_run(single_run):
    run_dir, _ = single_run
    stacks = (run_dir / "ranks" / "rank-0.txt").read_text()
    assert re.search(r"(Current thread|Thread) 0x[0-9a-f]+", stacks), stacks
    assert 'File "' in stacks
    log = (run_dir / "ranks" / "rank-0.log").read_text()
    assert "Epoch 1: val. loss" in log and "Test accuracy" in log
