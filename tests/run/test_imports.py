"""The torch side of the job: backend choice, CPU threads, GPU sharing and an import without
side effects."""
from __future__ import annotations

from conftest import python_prints


def test_import_has_no_side_effects():
    assert python_prints("import sys, torch.distributed as d; import mnist_hpc.job.process_group; "
                         "print('mpi4py' in sys.modules, d.is_initialized())") == ["False",
                                                                                   "False"]


def test_import_is_torch_free():
    assert python_prints("import sys, mnist_hpc.job.layout; "
                         "print('torch' in sys.modules, 'mpi4py' in sys.modules)") == ["False",
                                                                                       "False"]
