"""Seeing inside a run: per-rank timing and stragglers, FLOPs, the step log, TensorBoard, the
profile, stack dumps on demand and on a hung collective, per-rank logs, the report's columns.

The distributed tests are real 2-rank jobs (torchrun and mpiexec, gloo on CPU) with a fault
from tests/fault_injection.py: a rank that sleeps in each step, or one that stops (SIGSTOP).
"""

from __future__ import annotations

import gc
import re
import time

import pytest
import torch
from torch import nn

from mnist_hpc.config.options import make_config
from mnist_hpc.errors import UsageError, describe
from mnist_hpc.observe import failures, flops, ranklog, startup, timing

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


# --- one process: per-rank figures, step log, TensorBoard, profile, SIGUSR2 ----------------------


# --- two ranks ---------------------------------------------------------------------------------


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


def test_missing_ranks_are_named_with_their_nodes():
    hosts = ["a", "a", "b", "b"]
    assert failures.ranks_on_nodes([2, 3], hosts) == "ranks 2, 3 on b"
    assert failures.ranks_on_nodes([1, 3], hosts) == "rank 1 on a; rank 3 on b"
    assert failures.ranks_on_nodes([1], ()) == "rank 1"  # before the hosts were gathered


# --- start-up ------------------------------------------------------------------------------------

@pytest.fixture
def frozen(monkeypatch):
    """gc.freeze calls, counted instead of made (this process goes on), and the collector on
    again whatever the test did."""
    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    yield calls
    startup.end()  # no hold left behind for a later in-process run
    gc.enable()


def test_the_console_scripts_start_up_collects_nothing_then_freezes_what_it_built(frozen):
    startup.hold_collection()
    assert not gc.isenabled()
    age = startup.end()
    assert gc.isenabled() and frozen == ["freeze"] and age > 0
    startup.end()  # the start-up ends once
    assert frozen == ["freeze"]


def test_a_caller_that_goes_on_keeps_its_collector_as_it_was(frozen):
    startup.end()  # train.main in-process: no hold
    assert gc.isenabled() and frozen == []
    gc.disable()  # a caller's own choice is left alone
    startup.end()
    assert not gc.isenabled() and frozen == []
