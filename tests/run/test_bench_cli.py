"""The benchmark's command line: a quick run writes its JSON and table (the throughput,
epochs and time-to-accuracy measurements and the machine they ran on); bad input exits 2.
No timing asserts: figures on a shared CI machine say nothing; only their presence and sign
are checked. The notebook's loop and the package's run: test_bench_notebook.py."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, clean_env


def test_quick_run_succeeds_and_prints_the_table(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr
    assert "Training throughput" in proc.stdout
    assert "Seed recipe" in proc.stdout
    assert "Time to test accuracy" in proc.stdout
    assert f"Wrote {out}" in proc.stdout


def test_unknown_case_exits_2_with_the_valid_names(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mnist_hpc.bench", "--only", "nope",
                           "--out", str(tmp_path / "b.json")], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=clean_env())
    assert proc.returncode == 2
    assert "unknown name 'nope'" in proc.stderr and "notebook" in proc.stderr
    assert not (tmp_path / "b.json").exists()
