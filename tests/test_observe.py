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
import torch
from conftest import REPO, clean_env, only_run_dir, read_metrics
from launchers import PYTHON, launch, launcher
from scaling_helpers import cli, read_csv
from torch import nn

from mnist_hpc.config.options import make_config
from mnist_hpc.errors import UsageError, describe
from mnist_hpc.observe import failures, flops, ranklog, timing

SMALL = ["--limit", "1000", "--batch-size", "100", "--device", "cpu", "--backend", "gloo"]


# --- pieces -------------------------------------------------------------------------------------

def figures(compute: float, comm=0.5, host="h") -> dict:
    return {"data_s": 0.1, "compute_s": compute, "comm_s": comm, "eval_s": 1.0,
            "peak_memory_bytes": int(compute * 2**20), "host": host}


def test_summary_names_the_ranks_over_the_threshold():
    ranks = [figures(1.0, host="a"), figures(1.1, host="b"), figures(1.0, host="c"),
             figures(2.5, host="d")]
    summary = timing.summarize(ranks, threshold=1.2)
    assert [s["rank"] for s in summary["stragglers"]] == [3]
    assert summary["slowest"] == {"rank": 3, "host": "d", "compute_s": 2.5,
                                  "compute_over_median": pytest.approx(2.5 / 1.05)}
    assert summary["compute_s"]["min"] == 1.0 and summary["compute_s"]["max"] == 2.5
    assert summary["compute_s"]["median"] == pytest.approx(1.05)
    assert summary["compute_s"]["std"] == pytest.approx(0.405 ** 0.5)  # population std
    assert summary["peak_memory_bytes"] == int(2.5 * 2**20)
    assert "straggler: rank 3 (d) compute 2.38x median" in timing.ranks_text(summary, 4)
    # a laxer threshold names nobody; the slowest rank is still reported
    relaxed = timing.summarize(ranks, threshold=3.0)
    assert relaxed["stragglers"] == [] and relaxed["slowest"]["rank"] == 3
    # no communication measured on some rank (NCCL): no figure rather than a partial one
    assert timing.summarize([figures(1.0, comm=None)], 1.2)["comm_s"] is None


def test_step_clock_splits_data_wait_from_compute():
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clock = timing.StepClock(torch.device("cpu"), None, optimizer)

    def slow_batches():
        for _ in range(3):
            time.sleep(0.05)
            yield torch.ones(1, 4)

    for batch in clock.batches(slow_batches()):
        model(batch).sum().backward()
        optimizer.step()
        time.sleep(0.02)  # compute
    result = clock.finish()
    assert 0.15 <= result["data_s"] < 0.3
    assert 0.06 <= result["compute_s"] < 0.15
    assert result["comm_s"] is None and result["peak_memory_bytes"] > 0


def test_flops_of_a_linear_layer_are_counted_exactly():
    # forward 2*in*out per sample; backward as much again for the weight's gradient (the
    # input needs none)
    model = nn.Linear(10, 5)
    assert flops.flops_per_sample(model, torch.ones(4, 10)) == 2 * 10 * 5 * 2
    assert model.weight.grad is None  # counted on a copy: the run's model is untouched


def test_peaks_are_known_or_left_out():
    assert flops.peak_tflops("NVIDIA H100 PCIe", bf16=True) == 756.0
    assert flops.peak_tflops("NVIDIA H100 80GB HBM3", bf16=True) == 989.0
    assert flops.peak_tflops("NVIDIA A100-SXM4-40GB", bf16=False) == 19.5
    assert flops.peak_tflops("Tesla V100-SXM2-16GB", bf16=True) is None
    assert flops.peak_tflops(None, bf16=False) is None  # CPU
    assert flops.efficiency(1e9, 1000, 1.0, None, 4)["mfu"] is None
    assert flops.efficiency(1e9, 2000, 2.0, 10.0, 4) == {"tflops": 1.0, "mfu": 0.025}


def test_bad_observability_flags_are_usage_errors():
    with pytest.raises(UsageError, match="straggler_threshold must be >= 1"):
        make_config({"straggler_threshold": 0.5})
    with pytest.raises(UsageError, match="give --epochs 2 or more"):
        make_config({"profile": 3, "epochs": 1})
    with pytest.raises(UsageError, match="profile_ranks must be one of 0, all"):
        make_config({"profile_ranks": "some"})
    with pytest.raises(UsageError, match="log_every must be > 0"):
        make_config({"log_every": 0})


def test_error_lines_carry_where_it_happened():
    activity = failures.Activity()
    activity.set("all-reduce of gradients", 2, 17)
    assert str(activity) == "all-reduce of gradients, epoch 2, step 17"
    exc = RuntimeError("boom\nmore")
    exc.__notes__ = ["during the all-reduce of gradients, epoch 2, step 17"]
    assert describe(exc) == ("RuntimeError: boom; during the all-reduce of gradients, epoch 2, "
                             "step 17")
    assert ranklog.tag(0) == ""
    assert re.fullmatch(r"\[rank 3 \S+\] ", ranklog.tag(3))


# --- one process: per-rank figures, step log, TensorBoard, profile, SIGUSR2 ----------------------

@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    """One process, 2 epochs, with the step log and a profile; SIGUSR2 sent while it runs."""
    results = tmp_path_factory.mktemp("observe-single")
    command = [PYTHON, "-m", "mnist_hpc.train", *SMALL, "--epochs", "2", "--log-every", "3",
               "--profile", "2", "--rank-logs", "true", "--results-dir", str(results)]
    process = subprocess.Popen(command, cwd=REPO, env=clean_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not list(results.glob("*/ranks/rank-0.txt")) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGUSR2)  # the stack file exists: faulthandler listens
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return only_run_dir(results), output


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


# --- two ranks ---------------------------------------------------------------------------------

def fault_job(kind: str, fault: dict, args: list[str], tmp_path, timeout: float):
    command = launcher(kind) + [str(REPO / "tests" / "fault_injection.py"), *SMALL, *args,
                                "--results-dir", str(tmp_path)]
    return launch(command, env=clean_env(FAULT_RANK="1", **fault), timeout=timeout)


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_a_slow_rank_is_named_the_straggler(kind, tmp_path, capsys):
    result = fault_job(kind, {"FAULT": "slow", "FAULT_STEP": "0", "FAULT_SLEEP": "0.3"},
                       ["--epochs", "1", "--log-every", "5"], tmp_path / "study", timeout=240)
    assert result.returncode == 0, str(result)
    assert re.search(r"Epoch 0: .*straggler: rank 1 \(\S+\) compute [\d.]+x median", result.output
                     ), str(result)
    run_dir = only_run_dir(tmp_path / "study")
    ranks = read_metrics(run_dir)["epochs"][0]["ranks"]
    assert [s["rank"] for s in ranks["stragglers"]] == [1], ranks
    assert ranks["slowest"]["rank"] == 1 and ranks["slowest"]["compute_s"] >= 10 * 0.3
    # rank 0 waited for rank 1 in the gradient all-reduce: its wait is the longer one
    assert ranks["comm_s"]["max"] > ranks["comm_s"]["min"] > 0
    steps = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [5, 10]
    # the scaling report reads the same figures
    code, out, err = cli(capsys, "report", tmp_path / "study")
    assert code == 0, err
    row = read_csv(tmp_path / "study" / "scaling.csv")[0]
    assert float(row["compute_ratio"]) == pytest.approx(ranks["slowest"]["compute_over_median"])
    assert 0 < float(row["comm_share"]) < 1
    assert "slowest/median" in out and "comm share %" in out


STOP_TIMEOUT = 20


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_a_stopped_rank_ends_the_job_with_stacks_and_the_collective_named(kind, tmp_path):
    result = fault_job(kind, {"FAULT": "stop", "FAULT_STEP": "2"},
                       ["--epochs", "1", "--timeout", str(STOP_TIMEOUT)], tmp_path,
                       timeout=STOP_TIMEOUT + 150)
    assert result.returncode != 0, str(result)
    # the collective's timeout, the ranks' check-in (5 s), then the launcher ends the stopped
    # rank: torchrun after its 30 s grace for SIGTERM, hydra at once (the failing rank's
    # SIGKILL); start-up on a busy machine takes up to half a minute
    assert result.seconds < STOP_TIMEOUT + 5 + 30 + 45, str(result)
    assert re.search(r"error: rank 0 failed: .*Timed out.*; during the all-reduce of gradients, "
                     r"epoch 0, step 3; no word from rank 1 \(stopped, hung or dead\)",
                     result.output), str(result)
    run_dir = only_run_dir(tmp_path)
    stacks = (run_dir / "ranks" / "rank-0.txt").read_text()
    assert "rank 0 failed during all-reduce of gradients, epoch 0, step 3" in stacks
    assert "in train_one_epoch" in stacks, stacks
    assert re.search(r"(Current thread|Thread) 0x", stacks), stacks
    assert (run_dir / "ranks" / "rank-1.txt").read_text() == ""  # stopped: it cannot write
    assert "no word from rank 1" in read_metrics(run_dir)["error"]
