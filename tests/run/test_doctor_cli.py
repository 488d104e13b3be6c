"""The doctor (python -m mnist_hpc.doctor): its verdicts on described allocations, then real
launches under torchrun, mpiexec and one process, healthy and with one rank broken on purpose
(tests/faulty_doctor.py). The Slurm templates' PREFLIGHT=1 runs are in test_slurm_job.py.
"""

from __future__ import annotations

import pytest
from launchers import PYTHON, launch


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
