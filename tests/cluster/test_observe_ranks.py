"""Seeing inside a run: per-rank timing and stragglers, FLOPs, the step log, TensorBoard, the
profile, stack dumps on demand, per-rank logs, the report's columns (the stacks of a hung
collective: tests/cluster/test_watchdog.py).

The distributed test is a real 2-rank job (mpiexec, gloo on CPU) with a fault from
tests/fault_injection.py: a rank that sleeps in each step.
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO, clean_env, only_run_dir, read_metrics
from launchers import SMALL, launch, launcher
from scaling_helpers import cli, read_csv


def test_a_slow_rank_is_named_the_straggler(tmp_path, capsys):
    """Under mpiexec: the trainer gathers the per-rank figures itself, whatever launcher
    started the ranks."""
    result = fault_job("mpiexec", {"FAULT": "slow", "FAULT_STEP": "0", "FAULT_SLEEP": "0.3"},
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


def fault_job(kind: str, fault: dict, args: list[str], tmp_path, timeout: float):
    command = launcher(kind) + [str(REPO / "tests" / "fault_injection.py"), *SMALL, *args,
                                "--results-dir", str(tmp_path)]
    return launch(command, env=clean_env(FAULT_RANK="1", **fault), timeout=timeout)


