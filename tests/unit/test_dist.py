"""The torch side of the job: backend choice, CPU threads, GPU sharing and an import without
side effects."""

from __future__ import annotations

import os

import pytest
import torch

from mnist_hpc.errors import UsageError
from mnist_hpc.job import layout, process_group


def test_pick_backend():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert process_group.pick_backend("auto", cpu) == "gloo"
    assert process_group.pick_backend("auto", cuda) == "nccl"
    assert process_group.pick_backend("gloo", cuda) == "gloo"
    with pytest.raises(UsageError, match=r"nccl needs CUDA.*--backend gloo"):
        process_group.pick_backend("nccl", cpu)


@pytest.mark.parametrize("backend, local_ranks, gpus, refused", [
    ("nccl", 2, 1, True),   # two NCCL ranks on the one GPU of a node: "invalid usage"
    ("nccl", 5, 4, True),
    ("nccl", 4, 4, False),  # one GPU each, whether each rank sees all four or only its own
    ("nccl", 1, 1, False),
    ("gloo", 2, 1, False),  # gloo ranks may share a GPU
    ("nccl", 2, None, False),  # the node's count unknown: no verdict, NCCL decides
])
def test_nccl_ranks_sharing_a_gpu_are_refused_before_init(backend, local_ranks, gpus, refused):
    problem = process_group.sharing_problem(backend, local_ranks, gpus)
    assert (problem is not None) == refused
    if refused:
        assert problem == (f"{local_ranks} ranks on this node share {gpus} GPU(s), and NCCL "
                           f"cannot put two ranks on one GPU; start at most {gpus} rank(s) per "
                           f"node, or use --backend gloo")


@pytest.mark.parametrize("allowed, cores, local_world, threads", [
    (8, 8, 1, 8), (8, 8, 2, 4), (8, 8, 3, 2), (8, 8, 16, 1),  # whole node: split it
    (2, 8, 4, 2), (1, 8, 1, 1),                               # the launcher bound this rank
])
def test_cpu_threads(monkeypatch, allowed, cores, local_world, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(allowed)))
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert process_group.cpu_threads(local_world, {}) == threads


@pytest.mark.parametrize("threads, local_world, allowed, cores, warned", [
    (4, 2, 8, 8, False), (1, 8, 8, 8, False), (2, 4, 2, 8, False),  # fits; bound and fits
    (8, 2, 8, 8, True),   # OMP_NUM_THREADS=8 for each of 2 ranks on 8 cores
    (4, 1, 2, 8, True),   # 4 threads on a rank bound to 2 cores
])
def test_threads_beyond_the_cores_warn_with_the_fix(threads, local_world, allowed, cores,
                                                    warned):
    found = process_group.oversubscribed(threads, local_world, allowed, cores)
    assert (found is not None) == warned
    if warned:
        assert "they will slow each other down; set OMP_NUM_THREADS=" in found


@pytest.mark.parametrize("environ, threads", [
    ({"OMP_NUM_THREADS": "3"}, 3),                             # the user's explicit count
    ({"SLURM_CPUS_PER_TASK": "6"}, 6),                         # sbatch/srun --cpus-per-task
    ({"OMP_NUM_THREADS": "2", "SLURM_CPUS_PER_TASK": "6"}, 2),
    ({"OMP_NUM_THREADS": "", "SLURM_CPUS_PER_TASK": "x"}, 4),  # unusable: split the node
])
def test_cpu_threads_honours_explicit_counts(monkeypatch, environ, threads):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert process_group.cpu_threads(2, environ) == threads


def test_gpus_given_reads_device_files_and_gpu_lists(tmp_path):
    assert process_group.gpus_given({}, dev=str(tmp_path)) == []
    hidden = {"CUDA_VISIBLE_DEVICES": "", "ROCR_VISIBLE_DEVICES": "-1",
              "SLURM_JOB_GPUS": "NoDevFiles", "SLURM_GPUS_ON_NODE": "0"}
    assert process_group.gpus_given(hidden, dev=str(tmp_path)) == []
    for name in ("nvidia0", "nvidia1", "nvidiactl", "kfd"):
        (tmp_path / name).touch()
    given = {"CUDA_VISIBLE_DEVICES": "2,3", "SLURM_GPUS_ON_NODE": "4"}
    assert process_group.gpus_given(given, dev=str(tmp_path)) == [
        f"{tmp_path}/nvidia0 {tmp_path}/nvidia1 (NVIDIA)", f"{tmp_path}/kfd (AMD)",
        "CUDA_VISIBLE_DEVICES=2,3", "SLURM_GPUS_ON_NODE=4"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU here")
def test_auto_refuses_the_cpu_where_gpus_were_given_and_torch_sees_none():
    env = layout.detect({})
    with pytest.raises(UsageError, match=r"given GPUs \(CUDA_VISIBLE_DEVICES=0\) but torch"):
        process_group.pick_device("auto", env, {"CUDA_VISIBLE_DEVICES": "0"})
    assert process_group.pick_device("auto", env, {"CUDA_VISIBLE_DEVICES": "0"},
                                      refuse_unseen_gpus=False).type == "cpu"
    assert process_group.pick_device("cpu", env, {"CUDA_VISIBLE_DEVICES": "0"}).type == "cpu"
