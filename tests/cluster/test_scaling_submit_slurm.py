"""A 2-point scaling study submitted to a real one-node Slurm cluster, then its report. The
exact qsub/sbatch commands and the rules a study must meet: tests/run/test_scaling_submit.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from scaling_helpers import read_csv, write_sweep
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)


def test_slurm_study_then_report(tmp_path, slurm_cluster):  # noqa: F811  (the fixture)
    cluster = slurm_cluster
    results = tmp_path / "results"
    sweep = write_sweep(tmp_path, f"""\
        name: slurm-e2e
        mode: strong
        ranks: [1, 2]
        ranks_per_node: 2
        batch_size: 256
        epochs: 2
        train_args: --limit 512 --timeout 60 --no-plots
        results_dir: {results}
        slurm: {{time: "0:10:00", cpu_only: true, cpus_per_task: 1}}
        """)
    env = dict(cluster.env)
    env["PATH"] = f"{Path(cluster.bin['sbatch']).parent}:{env['PATH']}"
    submit = subprocess.run([sys.executable, "-m", "mnist_hpc.scaling", "submit", str(sweep),
                             "--scheduler", "slurm", "--study-id", "sl"],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert submit.returncode == 0, submit.stdout + submit.stderr + cluster.logs()
    assert "checked: sbatch --test-only" in submit.stdout
    study = results / "sl"
    jobs = [r["job_id"] for r in json.loads((study / "study.json").read_text())["runs"]]
    assert len(jobs) == 2 and all(jobs)
    for job in jobs:
        info = cluster.wait_finished(job, timeout=300)
        log = study / f"slurm-{job}.out"
        assert info["JobState"] == "COMPLETED", log.read_text() if log.exists() else info

    report = subprocess.run([sys.executable, "-m", "mnist_hpc.scaling", "report",
                             str(study)], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=120)
    assert report.returncode == 0, report.stderr
    rows = read_csv(study / "scaling.csv")
    assert [int(r["ranks"]) for r in rows] == [1, 2]
    assert [r["run_ids"] for r in rows] == [f"slurm-{job}" for job in jobs]
    assert all(int(r["runs"]) == 1 for r in rows)
    metrics = json.loads((study / f"slurm-{jobs[1]}" / "metrics.json").read_text())
    assert metrics["world"]["launcher"] == "slurm" and metrics["status"] == "completed"
    assert "Failed or incomplete" not in (study / "scaling.md").read_text()
