"""The doctor (python -m mnist_hpc.doctor): its verdicts on described allocations, then real
launches under torchrun, mpiexec and one process, healthy and with one rank broken on purpose
(tests/faulty_doctor.py). The Slurm templates' PREFLIGHT=1 runs are in test_slurm_job.py.
"""

from __future__ import annotations

from pathlib import Path

from mnist_hpc.doctor import allreduce, checks, probe
from mnist_hpc.doctor.cli import QUICK_MAX_BYTES

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




def test_gpus_a_rank_was_given_but_torch_cannot_see_fail():
    given = fact(1, 1)
    given["unseen_gpus"] = ["CUDA_VISIBLE_DEVICES=0"]
    findings = checks.evaluate([fact(0, 0), given])
    assert names(findings) == [("gpu_unseen", "fail", [1])]
    assert findings[0].problem == ("rank 1 on n1 was given GPUs (CUDA_VISIBLE_DEVICES=0) but "
                                   "torch sees none")
