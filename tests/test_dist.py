"""The torch side of the job: backend choice and an import without side effects."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO, clean_env
from mnist_hpc import dist
from mnist_hpc.errors import UsageError


def test_pick_backend():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert dist.pick_backend("auto", cpu) == "gloo"
    assert dist.pick_backend("auto", cuda) == "nccl"
    assert dist.pick_backend("gloo", cuda) == "gloo"
    with pytest.raises(UsageError, match=r"nccl needs CUDA.*--backend gloo"):
        dist.pick_backend("nccl", cpu)




def test_import_has_no_side_effects():
    code = ("import sys, torch.distributed as d; import mnist_hpc.dist; "
            "print('mpi4py' in sys.modules, d.is_initialized())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=clean_env(), timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr
