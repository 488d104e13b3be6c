"""The doctor (python -m mnist_hpc.doctor): its verdicts on described allocations, then real
launches under torchrun, mpiexec and one process, healthy and with one rank broken on purpose
(tests/faulty_doctor.py). The Slurm templates' PREFLIGHT=1 runs are in test_slurm_job.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, clean_env
from launchers import launch, launcher

from mnist_hpc.config.options import CHOICES
from mnist_hpc.doctor import allreduce
from mnist_hpc.doctor.cli import QUICK_MAX_BYTES
from mnist_hpc.scaling import perfmodel


@pytest.mark.parametrize("kind,name", [("torchrun", "torchrun"), ("mpiexec", "mpich")])
def test_two_healthy_ranks(kind, name, tmp_path):
    result, report = run_doctor(kind, tmp_path)
    assert result.returncode == 0, str(result)
    assert report["status"] == "ok" and report["findings"] == []
    assert all(status == "ok" for status in (c["status"] for c in report["checks"].values()))
    ranks = report["ranks"]
    assert [(r["rank"], r["local_rank"], r["node_rank"], r["launcher"]) for r in ranks] == [
        (0, 0, 0, name), (1, 1, 0, name)]
    assert all(r["device"]["kind"] == "cpu" and r["threads"] >= 1 for r in ranks)
    assert report["world"]["world_size"] == 2 and report["world"]["nodes"] == 1
    bench = report["benchmark"]
    assert bench["backend"] == "gloo"
    assert [row["bytes"] for row in bench["sizes"]] == allreduce.sizes_up_to(QUICK_MAX_BYTES)
    for row in bench["sizes"]:  # two ranks: busbw = algbw x 2(n-1)/n = algbw
        assert row["latency_us"] > 0
        assert row["algbw_gbs"] == pytest.approx(row["bytes"] / row["latency_us"] / 1e3)
        assert row["busbw_gbs"] == pytest.approx(row["algbw_gbs"])
    assert {g["model"] for g in bench["gradients"]} == set(CHOICES["model"])
    summary = report["allreduce"]
    assert summary["latency_us"] == bench["sizes"][0]["latency_us"]
    assert summary["hop_latency_us"] == pytest.approx(summary["latency_us"] / 2)
    assert summary["bus_bandwidth_gbs"] == bench["sizes"][-1]["busbw_gbs"]
    # the scaling model reads these two figures back (scaling model --from doctor.json)
    assert perfmodel.network_from_doctor(str(tmp_path / "doctor.json")) == (
        summary["bus_bandwidth_gbs"], summary["hop_latency_us"])
    assert "Doctor OK" in result.output and "busbw GB/s" in result.output
    # the doctor's own work, start-up excluded (measured here: docs/jobs.md, "Preflight")
    assert report["elapsed_s"] < 10, report["elapsed_s"]
    assert list((tmp_path / "results").iterdir()) == []  # the marker is gone


@pytest.mark.parametrize("fault", ["local_rank", "data", "version"])
def test_one_broken_rank_is_flagged(fault, tmp_path):
    faults = {"local_rank": {"FAULT_ENV": "LOCAL_RANK=0"},
              "data": {"FAULT_DATA_DIR": str(broken_data_dir(tmp_path))},
              "version": {"FAULT_VERSION": "9.9.9"}}[fault]
    check = {"local_rank": "local_ranks", "data": "data", "version": "versions"}[fault]
    # a wrong LOCAL_RANK is a torchrun variable; the others break under mpiexec (no agent)
    kind = "torchrun" if fault == "local_rank" else "mpiexec"
    result, report = run_doctor(kind, tmp_path, script=str(REPO / "tests" / "faulty_doctor.py"),
                                FAULT_RANK="1", **faults)
    assert result.returncode == 1, str(result)
    assert [f["check"] for f in report["findings"]] == [check], report["findings"]
    assert report["status"] == "failed" and report["checks"][check]["status"] == "fail"
    finding = report["findings"][0]
    assert finding["ranks"] == ([0, 1] if fault == "local_rank" else [1])
    assert f"FAIL {check}:" in result.output and "fix:" in result.output
    if fault == "data":
        assert "t10k-labels-idx1-ubyte.gz is missing" in finding["problem"]
    if fault == "version":
        assert "9.9.9 on rank 1" in finding["problem"]
    # the benchmark still ran: a failing check never stops the ranks' collectives
    assert report["benchmark"]["sizes"], report["benchmark"]


def test_one_process_skips_the_benchmark(tmp_path):
    result, report = run_doctor("single", tmp_path)
    assert result.returncode == 0, str(result)
    assert report["allreduce"] is None and "skipped" in report["benchmark"]
    assert [r["launcher"] for r in report["ranks"]] == ["single"]


def run_doctor(kind: str, tmp_path: Path, *args: str, script: str | None = None,
               **fault: str):
    command = launcher(kind) + ([script] if script else ["-m", "mnist_hpc.doctor"])
    out = tmp_path / "doctor.json"
    result = launch(command + ["--quick", "--device", "cpu", "--results-dir",
                               str(tmp_path / "results"), "--out", str(out), *args],
                    env=clean_env(**fault), timeout=120)
    report = json.loads(out.read_text()) if out.exists() else None
    return result, report


def broken_data_dir(tmp_path: Path) -> Path:
    """Three of the four MNIST files."""
    raw = tmp_path / "broken-data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        shutil.copy(REPO / "data" / "MNIST" / "raw" / f"{name}.gz", raw)
    return raw.parent.parent
