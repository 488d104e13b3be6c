"""The torch side of the job: backend choice and an import without side effects."""

from __future__ import annotations


import pytest
import torch

from conftest import python_prints
from mnist_hpc import dist
from mnist_hpc.errors import UsageError


def test_pick_backend():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert dist.pick_backend("auto", cpu) == "gloo"
    assert dist.pick_backend("auto", cuda) == "nccl"
    assert dist.pick_backend("gloo", cuda) == "gloo"
    with pytest.raises(UsageError, match=r"nccl needs CUDA.*--backend gloo"):
        dist.pick_backend("nccl", cpu)




@pytest.mark.parametrize("backend, local_ranks, gpus, refused", [
    ("nccl", 2, 1, True),   # two NCCL ranks on the one GPU of a node: "invalid usage"
    ("nccl", 5, 4, True),
    ("nccl", 4, 4, False),  # one GPU each, whether each rank sees all four or only its own
    ("nccl", 1, 1, False),
    ("gloo", 2, 1, False),  # gloo ranks may share a GPU
    ("nccl", 2, None, False),  # the node's count unknown: no verdict, NCCL decides
])
def test_nccl_ranks_sharing_a_gpu_are_refused_before_init(backend, local_ranks, gpus, refused):
    problem = dist.sharing_problem(backend, local_ranks, gpus)
    assert (problem is not None) == refused
    if refused:
        assert problem == (f"{local_ranks} ranks on this node share {gpus} GPU(s), and NCCL "
                           f"cannot put two ranks on one GPU; start at most {gpus} rank(s) per "
                           f"node, or use --backend gloo")


def test_import_has_no_side_effects():
    assert python_prints("import sys, torch.distributed as d; import mnist_hpc.dist; "
                         "print('mpi4py' in sys.modules, d.is_initialized())") == ["False",
                                                                                   "False"]
