"""mnist_hpc.scaling.local: the commands a local study runs (torchrun, or mpiexec bound to
cores); e2e, a 1- and 2-rank study trained for real under torchrun, then its report."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, clean_env
from scaling_helpers import PNG_MAGIC, cli, read_csv, write_sweep

from mnist_hpc.scaling import aggregate


def test_local_dry_run_commands_and_core_binding(tmp_path, capsys):
    sweep = write_sweep(tmp_path, f"""\
        mode: strong
        ranks: [1, 2]
        epochs: 2
        results_dir: {tmp_path}
        local: {{launcher: mpiexec, cores_per_rank: 1}}
        """)
    code, out, err = cli(capsys, "local", sweep, "--dry-run", "--study-id", "d")
    assert code == 0, err
    argv = [shlex.split(line) for line in out.splitlines()]
    assert [a[1:5] for a in argv] == [["-n", "1", "-bind-to", "core:1"],
                                      ["-n", "2", "-bind-to", "core:1"]]
    assert argv[1][-4:] == ["--results-dir", str(tmp_path / "d"), "--run-id", "n1-r2-rep0"]
    code, _, err = cli(capsys, "local", sweep, "--dry-run", "--launcher", "torchrun")
    assert code == 2 and "cores_per_rank needs --launcher mpiexec" in err
    code, out, _ = cli(capsys, "local", sweep, "--dry-run", "--launcher", "torchrun",
                       "--cores-per-rank", "0")
    assert code == 0 and "torch.distributed.run --standalone --nproc_per_node 2" in out
    code, _, err = cli(capsys, "local", sweep, "--dry-run", "--study-id", "../x")
    assert code == 2 and "--study-id '../x' may hold only" in err
    code, _, err = cli(capsys, "local", sweep, "--dry-run", "--cores-per-rank", "-1")
    assert code == 2 and "--cores-per-rank: '-1' is not a whole number >= 0" in err
    assert {p.name for p in tmp_path.iterdir()} == {"sweep.yaml"}  # dry runs make nothing


# --- e2e: a local study with torchrun, then the report ------------------------------------

@pytest.mark.parametrize("config, model, augment, launcher", [
    ("default", "cnn", "none", "torchrun"), ("resnet", "resnet", "shift", "mpiexec"),
    ("vit", "vit", "shift", "mpiexec")])
def test_local_study_then_report(tmp_path, config, model, augment, launcher):
    """Each model's preset through a 1- and 2-rank study and its report (all three presets
    train a global batch of 256 here), under either launcher."""
    results = tmp_path / "results"
    sweep = write_sweep(tmp_path, f"""\
        name: e2e
        mode: strong
        ranks: [1, 2]
        config: {config}
        batch_size: 256
        epochs: 2
        train_args: --device cpu --limit 256 --timeout 60 --no-plots
        results_dir: {results}
        local: {{launcher: {launcher}}}
        """)
    env = clean_env()
    done = subprocess.run([sys.executable, "-m", "mnist_hpc.scaling", "local", str(sweep),
                           "--study-id", "loc"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = results / "loc"
    manifest = json.loads((study / "study.json").read_text())
    assert [(r["ranks"], r["exit_code"]) for r in manifest["runs"]] == [(1, 0), (2, 0)]
    assert (study / "logs" / "n1-r2-rep0.log").is_file()

    report = subprocess.run([sys.executable, "-m", "mnist_hpc.scaling", "report", str(study)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert report.returncode == 0, report.stderr
    rows = read_csv(study / "scaling.csv")
    assert list(rows[0]) == list(aggregate.CSV_COLUMNS)
    assert [(int(r["ranks"]), int(r["global_batch"]), float(r["per_rank_batch"]))
            for r in rows] == [(1, 256, 256.0), (2, 256, 128.0)]
    assert float(rows[0]["speedup"]) == 1.0 and float(rows[0]["efficiency"]) == 1.0
    for row in rows:
        assert float(row["efficiency"]) == pytest.approx(float(row["speedup"]) / int(row["ranks"]))
        assert float(row["samples_per_s"]) > 0 and float(row["epoch_s"]) > 0
        assert 0 <= float(row["test_acc"]) <= 100
    assert rows[0]["comm_s"] == "" and float(rows[1]["comm_s"]) > 0  # gloo, 2 ranks only
    metrics = json.loads((study / "n1-r2-rep0" / "metrics.json").read_text())
    assert (metrics["model"]["name"], metrics["config"]["augment"]) == (model, augment)
    assert metrics["world"]["launcher"] == {"torchrun": "torchrun", "mpiexec": "mpich"}[launcher]
    assert float(rows[1]["epoch_s"]) == pytest.approx(metrics["epochs"][1]["train_s"])

    import matplotlib.image

    for name in ("throughput.png", "efficiency.png", "epoch_time.png"):
        path = study / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    md = (study / "scaling.md").read_text()
    assert "excluded as warm-up" in md and "Failed or incomplete" not in md
