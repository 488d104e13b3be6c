"""mnist_hpc.scaling.report (with .gather, .aggregate, .plots): every run of a study found or
listed as missing, repeats aggregated, warm-up excluded, failures named."""

from __future__ import annotations

import json

import pytest
from scaling_helpers import calls, cli, fake_metrics, fake_qsub, read_csv, write_sweep  # noqa: F401


def test_submit_records_job_ids_and_report_finds_every_run(tmp_path, capsys, fake_qsub):
    sweep = write_sweep(tmp_path, f"""\
        mode: strong
        ranks: [1, 2, 4]
        ranks_per_node: 4
        repeats: 2
        results_dir: {tmp_path / 'results'}
        pbs: {{queue: debug, walltime: "0:20:00", account: MYPROJ}}
        """)
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "pbs", "--study-id", "st")
    assert code == 0, err
    study = tmp_path / "results" / "st"
    manifest = json.loads((study / "study.json").read_text())
    jobs = [r["job_id"] for r in manifest["runs"]]
    assert jobs == [f"{1000 + i}.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov" for i in range(1, 7)]
    assert [r["state"] for r in manifest["runs"]] == ["submitted"] * 6
    made = calls(fake_qsub, "qsub")
    assert len(made) == 6 and made[0] == manifest["runs"][0]["command"][1:]

    # the jobs' run directories as the template names them (pbs-<job number>): rank 4's
    # second repeat failed, rank 2's second repeat never started
    timings = {1: [3.0, 2.0], 2: [2.0, 1.0], 4: [1.5, 0.8]}
    for entry, job in zip(manifest["runs"], jobs):
        number = job.split(".")[0]
        ranks, repeat = entry["ranks"], entry["repeat"]
        if (ranks, repeat) == (2, 1):
            continue
        fake_metrics(study / f"pbs-{number}", ranks=ranks, global_batch=512, job_id=job,
                     epoch_s=[9.0, timings[ranks][1] * (1.1 if repeat else 1.0)],
                     status="failed" if (ranks, repeat) == (4, 1) else "completed",
                     comm_s=0.2)
    code, out, err = cli(capsys, "report", study)
    assert code == 0, err
    rows = read_csv(study / "scaling.csv")
    assert [int(r["ranks"]) for r in rows] == [1, 2, 4]
    assert [int(r["runs"]) for r in rows] == [2, 1, 1]
    one = rows[0]
    # warm-up epoch (9 s) excluded; median of 4096/2.0 and 4096/2.2
    assert float(one["samples_per_s_min"]) == pytest.approx(4096 / 2.2)
    assert float(one["samples_per_s_max"]) == pytest.approx(4096 / 2.0)
    assert float(one["samples_per_s"]) == pytest.approx((4096 / 2.0 + 4096 / 2.2) / 2)
    assert float(rows[2]["speedup"]) == pytest.approx(float(rows[2]["samples_per_s"])
                                                      / float(one["samples_per_s"]))
    md = (study / "scaling.md").read_text()
    assert "first epoch of each run is excluded as warm-up" in md
    assert "## Failed or incomplete runs" in md
    assert "n1-r4-rep1 (pbs-1006)" in md and "**failed**: rank 1: RuntimeError" in md
    assert "n1-r2-rep1" in md and "**missing**" in md and "job 1005." in md


def test_report_without_a_manifest_and_with_one_epoch(tmp_path, capsys):
    for ranks, seconds in ((1, 4.0), (2, 2.5)):
        fake_metrics(tmp_path / f"run{ranks}", ranks=ranks, global_batch=256, epoch_s=[seconds])
    fake_metrics(tmp_path / "stuck", ranks=4, global_batch=256, epoch_s=[1.0], status="running")
    code, out, err = cli(capsys, "report", tmp_path, "--model", "1.25,50")
    assert code == 0, err
    rows = read_csv(tmp_path / "scaling.csv")
    assert float(rows[1]["speedup"]) == pytest.approx(4.0 / 2.5)
    md = (tmp_path / "scaling.md").read_text()
    assert "throughput includes the first (warm-up)" in md
    assert "stuck" in md and "**running**" in md
    model = md.split("## Performance model")[1]
    assert "| 256 |" in model and "| 512 |" not in model  # strong: at most one sample a rank


def test_report_of_an_empty_folder_is_a_usage_error(tmp_path, capsys):
    code, _, err = cli(capsys, "report", tmp_path)
    assert code == 2 and "no run directories" in err
    fake_metrics(tmp_path / "run1", ranks=1, global_batch=256, epoch_s=[4.0])
    code, _, err = cli(capsys, "report", tmp_path, "--model", "25,-1")
    assert code == 2 and "--model '25,-1': bandwidth must be > 0 and latency >= 0" in err
