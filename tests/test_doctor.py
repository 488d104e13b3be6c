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
from launchers import PYTHON, launch, launcher

from mnist_hpc.doctor import allreduce, checks, probe
from mnist_hpc.doctor.cli import QUICK_MAX_BYTES
from mnist_hpc.scaling import perfmodel

# --- verdicts on described allocations ----------------------------------------------------


def fact(rank: int, local: int, host: str = "n1", cpus=(0, 1, 2, 3), kind: str = "cpu",
         gpu: str | None = None, visible: int = 0, threads: int = 1, local_size: int = 2,
         version: str = "0.1.0", time: float = 1000.0) -> dict:
    return {"rank": rank, "local_rank": local, "local_world_size": local_size, "host": host,
            "launcher": "torchrun",
            "device": {"kind": kind, "name": "H200" if gpu else kind, "index": 0,
                       "uuid": gpu, "bus_id": None},
            "visible_gpus": visible, "cpus": list(cpus), "host_cpus": 8, "threads": threads,
            "versions": {"python": "3.11", "torch": "2.14", "cuda": "13.0", "nccl": None,
                         "mnist_hpc": version, "git_commit": "abc"},
            "data": None, "results_dir": None, "time": time}


def names(findings: list[checks.Finding]) -> list[tuple[str, str, list[int]]]:
    return [(f.check, f.level, f.ranks) for f in findings]


def test_a_healthy_two_node_allocation_passes():
    facts = [fact(0, 0, "n1", gpu="GPU-a", kind="cuda", visible=2),
             fact(1, 1, "n1", gpu="GPU-b", kind="cuda", visible=2),
             fact(2, 0, "n2", gpu="GPU-a", kind="cuda", visible=2, time=1000.4),
             fact(3, 1, "n2", gpu="GPU-b", kind="cuda", visible=2, time=1000.5)]
    assert checks.evaluate(facts) == []
    assert checks.node_ranks([f["host"] for f in facts]) == [0, 0, 1, 1]


def test_gpu_problems_are_flagged():
    shared = [fact(0, 0, gpu="GPU-a", kind="cuda", visible=2),
              fact(1, 1, gpu="GPU-a", kind="cuda", visible=2)]
    assert names(checks.evaluate(shared)) == [("gpu_sharing", "fail", [0, 1])]
    # per-task binding: each rank sees only "its" GPU 0; fine while the UUIDs differ
    per_task = [fact(0, 0, gpu="GPU-a", kind="cuda", visible=1),
                fact(1, 1, gpu="GPU-b", kind="cuda", visible=1)]
    assert checks.evaluate(per_task) == []
    too_few = [fact(0, 0, gpu="GPU-a", kind="cuda", visible=2, local_size=3),
               fact(1, 1, gpu="GPU-b", kind="cuda", visible=2, local_size=3),
               fact(2, 2, gpu="GPU-a", kind="cuda", visible=2, local_size=3)]
    assert names(checks.evaluate(too_few)) == [("gpu_sharing", "fail", [0, 2]),
                                               ("gpu_count", "fail", [2])]
    mixed = [fact(0, 0, gpu="GPU-a", kind="cuda", visible=1), fact(1, 1)]
    assert names(checks.evaluate(mixed)) == [("gpu_missing", "fail", [1])]


def test_duplicate_local_ranks_are_flagged():
    found = checks.evaluate([fact(0, 0), fact(1, 0)])
    assert names(found) == [("local_ranks", "fail", [0, 1])]
    assert "local ranks [0, 0]" in found[0].problem


def test_cpu_overlap_matters_only_between_individually_bound_ranks():
    unbound = [fact(0, 0, cpus=range(8)), fact(1, 1, cpus=range(8))]
    assert checks.evaluate(unbound) == []
    bound_apart = [fact(0, 0, cpus=range(0, 4)), fact(1, 1, cpus=range(4, 8))]
    assert checks.evaluate(bound_apart) == []
    overlapping = [fact(0, 0, cpus=range(0, 5)), fact(1, 1, cpus=range(3, 8))]
    found = checks.evaluate(overlapping)
    assert names(found) == [("cpu_binding", "fail", [0, 1])]
    assert "(3-4)" in found[0].problem
    oversubscribed = [fact(0, 0, cpus=range(2), threads=2), fact(1, 1, cpus=range(2), threads=2)]
    assert names(checks.evaluate(oversubscribed)) == [("cpu_threads", "warn", [0, 1])]
    assert not checks.failed(checks.evaluate(oversubscribed))


def test_versions_data_results_and_clocks_are_flagged():
    facts = [fact(0, 0, "n1", local_size=1),
             fact(1, 0, "n2", local_size=1, version="9.9", time=1002.0)]
    facts[1]["data"] = "MNIST file x.gz is missing"
    facts[1]["results_dir"] = "does not see rank 0's file"
    found = checks.evaluate(facts)
    assert names(found) == [("versions", "fail", [1]), ("data", "fail", [1]),
                            ("results_dir", "fail", [1]), ("clocks", "fail", [0, 1])]
    assert "mnist_hpc differs: 0.1.0 on rank 0; 9.9 on rank 1" in found[0].problem
    assert "2.0 s" in found[3].problem


def test_compact_ranges():
    assert checks.compact_ranges([8, 0, 1, 2, 3]) == "0-3,8"
    assert checks.compact_ranges([5]) == "5"
    assert checks.compact_ranges([0, 2, 3, 4, 6, 7]) == "0,2-4,6-7"


def test_benchmark_sizes_and_bus_bandwidth():
    assert allreduce.sizes_up_to(64 * 2**20)[:3] == [8, 32, 128]
    assert allreduce.sizes_up_to(64 * 2**20)[-2:] == [32 * 2**20, 64 * 2**20]
    assert allreduce.sizes_up_to(QUICK_MAX_BYTES)[-1] == QUICK_MAX_BYTES
    assert allreduce.bus_factor(2) == 1.0 and allreduce.bus_factor(8) == 1.75
    grads = allreduce.gradient_bytes()
    assert grads["cnn"] == grads["seed"] == 1_199_882 * 4


def test_the_marker_file_is_seen_only_in_the_same_directory(tmp_path):
    marker, problem = probe.write_marker(str(tmp_path / "new" / "results"))
    assert problem is None and probe.read_marker(marker, None) is None
    elsewhere = {"path": str(tmp_path / "other" / Path(marker["path"]).name),
                 "token": marker["token"]}
    assert "not shared" in probe.read_marker(elsewhere, None)
    probe.remove_marker(marker)
    assert not Path(marker["path"]).exists()
    (tmp_path / "file").write_text("")  # a results "directory" that is a file
    marker, problem = probe.write_marker(str(tmp_path / "file"))
    assert marker is None and problem.startswith(f"cannot write to {tmp_path / 'file'}")
    assert probe.read_marker(None, problem).startswith("rank 0 could not write")


# --- real launches ---------------------------------------------------------------------------

def run_doctor(kind: str, tmp_path: Path, *args: str, script: str | None = None,
               **fault: str):
    command = launcher(kind) + ([script] if script else ["-m", "mnist_hpc.doctor"])
    out = tmp_path / "doctor.json"
    result = launch(command + ["--quick", "--device", "cpu", "--results-dir",
                               str(tmp_path / "results"), "--out", str(out), *args],
                    env=clean_env(**fault), timeout=120)
    report = json.loads(out.read_text()) if out.exists() else None
    return result, report


@pytest.mark.e2e
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
    assert {g["model"] for g in bench["gradients"]} == {"seed", "cnn", "resnet", "vit"}
    summary = report["allreduce"]
    assert summary["latency_us"] == bench["sizes"][0]["latency_us"]
    assert summary["hop_latency_us"] == pytest.approx(summary["latency_us"] / 2)
    assert summary["bus_bandwidth_gbs"] == bench["sizes"][-1]["busbw_gbs"]
    # the scaling model reads these two figures back (scaling model --from doctor.json)
    assert perfmodel.network_from_doctor(str(tmp_path / "doctor.json")) == (
        summary["bus_bandwidth_gbs"], summary["hop_latency_us"])
    assert "Doctor OK" in result.output and "busbw GB/s" in result.output
    # the doctor's own work, start-up excluded (measured here: README "Preflight")
    assert report["elapsed_s"] < 10, report["elapsed_s"]
    assert list((tmp_path / "results").iterdir()) == []  # the marker is gone


def broken_data_dir(tmp_path: Path) -> Path:
    """Three of the four MNIST files."""
    raw = tmp_path / "broken-data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        shutil.copy(REPO / "data" / "MNIST" / "raw" / f"{name}.gz", raw)
    return raw.parent.parent


@pytest.mark.e2e
@pytest.mark.parametrize("fault", ["local_rank", "data", "version"])
def test_one_broken_rank_is_flagged(fault, tmp_path):
    faults = {"local_rank": {"FAULT_ENV": "LOCAL_RANK=0"},
              "data": {"FAULT_DATA_DIR": str(broken_data_dir(tmp_path))},
              "version": {"FAULT_VERSION": "9.9.9"}}[fault]
    check = {"local_rank": "local_ranks", "data": "data", "version": "versions"}[fault]
    result, report = run_doctor("torchrun", tmp_path, script=str(REPO / "tests" /
                                                                "faulty_doctor.py"),
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


@pytest.mark.e2e
def test_one_process_skips_the_benchmark(tmp_path):
    result, report = run_doctor("single", tmp_path)
    assert result.returncode == 0, str(result)
    assert report["allreduce"] is None and "skipped" in report["benchmark"]
    assert [r["launcher"] for r in report["ranks"]] == ["single"]


@pytest.mark.parametrize("args,message", [
    (["--out", "{tmp}/file/doctor.json"], "--out {tmp}/file/doctor.json: cannot create"),
    (["--max-bytes", "3"], "is not a size of at least 8 bytes"),
    (["--epochs", "zero"], "--epochs"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    (tmp_path / "file").write_text("")  # not a directory: nothing can be created under it
    args = [arg.format(tmp=tmp_path) for arg in args]
    result = launch([PYTHON, "-m", "mnist_hpc.doctor", "--results-dir", str(tmp_path), *args],
                    timeout=60)
    message = message.format(tmp=tmp_path)
    assert result.returncode == 2, str(result)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
