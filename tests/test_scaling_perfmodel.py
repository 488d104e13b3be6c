"""mnist_hpc.scaling.perfmodel: the ring all-reduce model and the ``model`` subcommand."""

from __future__ import annotations

import pytest

from mnist_hpc.scaling import perfmodel
from scaling_helpers import cli


def test_ring_allreduce_model():
    nbytes = 1_199_882 * 4
    assert perfmodel.allreduce_s(1, nbytes, 25, 10) == 0.0
    two = perfmodel.allreduce_s(2, nbytes, 25, 10)
    assert two == pytest.approx(nbytes / 25e9 + 2 * 10e-6)
    big = perfmodel.allreduce_s(1024, nbytes, 25, 0)
    assert big == pytest.approx(2 * 1023 / 1024 * nbytes / 25e9)
    rows = perfmodel.predict([1, 2, 4, 512], "strong", 512, 1e-5, nbytes, 1.25, 50, 1)
    assert rows[0]["speedup"] == 1.0 and rows[0]["efficiency"] == 1.0
    assert [r["efficiency"] for r in rows] == sorted((r["efficiency"] for r in rows),
                                                     reverse=True)
    weak = perfmodel.predict([1, 8], "weak", 128, 1e-5, nbytes, 25, 10, 1)
    assert weak[1]["per_rank_batch"] == 128 and weak[1]["step_ms"] > weak[0]["step_ms"]


def test_model_subcommand(capsys):
    code, out, err = cli(capsys, "model", "--compute-ms", "20", "--network", "1.25,50",
                         "--ranks", "1,2,64")
    assert code == 0, err
    assert "| 64 |" in out and "4.80 MB" in out
