"""mnist_hpc.scaling: sweep validation, plans, scheduler commands and their refusals, reports.

Fast tests run the CLI in-process against fake ``qsub``/``sbatch`` scripts that record their
calls (so "nothing was submitted" is proven, not assumed) and against synthetic run
directories. The e2e tests train for real: a local 1- and 2-rank study under torchrun, and a
2-point study submitted to a real one-node Slurm cluster.
"""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from mnist_hpc import scaling
from slurm_cluster import slurm_cluster  # noqa: F401  (the session fixture)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_sweep(tmp_path: Path, body: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def fake_tool(bin_dir: Path, name: str, script: str) -> Path:
    """A stand-in for qsub/sbatch: appends its argv (one JSON list a line) to <name>.calls."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, pathlib, sys
        calls = pathlib.Path({str(bin_dir / (name + '.calls'))!r})
        with calls.open("a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\\n")
        n = len(calls.read_text().splitlines())
        args = sys.argv[1:]
        """) + textwrap.dedent(script))
    path.chmod(0o755)
    return path


def calls(bin_dir: Path, name: str) -> list[list[str]]:
    path = bin_dir / f"{name}.calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fake_qsub(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "qsub", 'print(f"{1000 + n}.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov")\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return bin_dir


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """--test-only refuses jobs of more than one node, as a one-node cluster would."""
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "sbatch", """\
        nodes = int(args[args.index("--nodes") + 1])
        if "--test-only" in args:
            if nodes > 1:
                print("sbatch: error: Batch job submission failed: Requested node "
                      "configuration is not available", file=sys.stderr)
                sys.exit(1)
            print(f"sbatch: Job {n} to start at now using 1 processors on nodes vm",
                  file=sys.stderr)
        else:
            print(f"{2000 + n};cluster")
        """)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return bin_dir


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = scaling.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


POLARIS = """\
    name: pol
    mode: strong
    ranks: [1, 2, 4, 8, 16]
    ranks_per_node: 4
    batch_size: 512
    epochs: 3
    train_args: --precision bf16
    results_dir: {results}
    pbs:
      queue: {{debug: 1-2, preemptable: 3-10}}
      walltime: "0:20:00"
      account: MYPROJ
    """


# --- (d) plans and validation ---------------------------------------------------------------

def plan_json(capsys, sweep: Path) -> list[dict]:
    code, out, err = cli(capsys, "plan", sweep, "--json")
    assert code == 0, err
    return json.loads(out)["runs"]


def test_plan_strong_fixes_the_global_batch(tmp_path, capsys):
    sweep = write_sweep(tmp_path, """\
        mode: strong
        ranks: [1, 2, 4, 8]
        ranks_per_node: 4
        batch_size: 512
        repeats: 2
        """)
    runs = plan_json(capsys, sweep)
    assert [r["ranks"] for r in runs] == [1, 2, 4, 8] * 2  # repeats outermost
    assert [r["repeat"] for r in runs] == [0] * 4 + [1] * 4
    assert {r["global_batch"] for r in runs} == {512}
    assert [r["per_rank_batch"] for r in runs[:4]] == [512, 256, 128, 64]
    assert [r["nodes"] for r in runs[:4]] == [1, 1, 1, 2]
    assert [r["ranks_per_node"] for r in runs[:4]] == [1, 2, 4, 4]
    assert all(r["train_args"][:4] == ["--batch-size", "512", "--batch-mode", "global"]
               for r in runs)
    code, out, _ = cli(capsys, "plan", sweep)
    assert code == 0 and "n2-r8-rep1" in out and "fixed global batch 512" in out


def test_plan_weak_fixes_the_per_rank_batch(tmp_path, capsys):
    sweep = write_sweep(tmp_path, """\
        mode: weak
        nodes: [1, 2, 4]
        ranks_per_node: 4
        batch_size: 128
        """)
    runs = plan_json(capsys, sweep)
    assert [r["ranks"] for r in runs] == [4, 8, 16]
    assert [r["global_batch"] for r in runs] == [512, 1024, 2048]
    assert {r["per_rank_batch"] for r in runs} == {128}
    assert all(r["batch_mode"] == "per-rank" for r in runs)
    assert all(r["train_args"][:4] == ["--batch-size", "128", "--batch-mode", "per-rank"]
               for r in runs)


def test_plan_takes_the_batch_and_epochs_from_the_config(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("batch_size: 256\nepochs: 5\n")
    sweep = write_sweep(tmp_path, "mode: strong\nranks: [1, 2]\nconfig: mine.yaml\n")
    code, out, err = cli(capsys, "plan", sweep, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["sweep"]["config"] == str(config)  # absolute: jobs run elsewhere
    assert data["sweep"]["epochs"] == 5
    assert {r["global_batch"] for r in data["runs"]} == {256}


@pytest.mark.parametrize("body, message", [
    ("mode: strong\nranks: [1]\nrepeat: 2\n", "unknown key 'repeat'"),
    ("mode: strong\nranks: [1]\npbs: {queues: debug}\n", "unknown key 'queues' in the pbs"),
    ("mode: strong\nranks: [1]\nslurm: {partiton: x}\n", "did you mean 'partition'"),
    ("mode: medium\nranks: [1]\n", "mode must be strong or weak"),
    ("mode: strong\n", "exactly one of ranks"),
    ("mode: strong\nranks: [1]\nnodes: [1]\n", "exactly one of ranks"),
    ("mode: strong\nnodes: [1, 2]\n", "needs ranks_per_node"),
    ("mode: strong\nranks: [1, 0]\n", "positive integer"),
    ("mode: strong\nranks: [2, 2]\n", "lists a value twice"),
    ("mode: strong\nranks: [4, 6]\nranks_per_node: 4\n", "do not fill whole nodes"),
    ("mode: strong\nranks: [1, 8]\nbatch_size: 4\n", "raise batch_size"),
    ("mode: strong\nranks: [1]\ntrain_args: --epochs 3\n", "may not contain --epochs"),
    ("mode: strong\nranks: [1]\ntrain_args: --batch-mode per-rank\n", "use the sweep key mode"),
    ("mode: strong\nranks: [1]\ntrain_args: --lr -1\n", "lr must be > 0"),
    ("mode: strong\nranks: [1]\ntrain_args: --no-such-flag\n", "unrecognized arguments"),
    ("mode: strong\nranks: [1]\nconfig: nope\n", "no preset named 'nope'"),
    ("mode: strong\nranks: [1]\npbs: {walltime: 1:00:00}\n", "write it in quotes"),
    ("mode: strong\nranks: [1\n", "YAML syntax error"),
])
def test_bad_sweeps_exit_2_naming_the_problem(tmp_path, capsys, body, message):
    code, out, err = cli(capsys, "plan", write_sweep(tmp_path, body))
    assert code == 2
    assert message in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_shipped_sweeps_are_valid(capsys):
    shipped = sorted(p.stem for p in scaling.SWEEPS_DIR.glob("*.yaml"))
    assert {"local_cpu", "polaris_strong", "polaris_weak", "slurm_cpu"} <= set(shipped)
    for name in shipped:
        code, out, err = cli(capsys, "plan", name)
        assert code == 0, (name, err)


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
    assert {p.name for p in tmp_path.iterdir()} == {"sweep.yaml"}  # dry runs make nothing


# --- (b) dry runs ---------------------------------------------------------------------------

def test_pbs_dry_run_prints_one_qsub_per_run(tmp_path, capsys, fake_qsub):
    sweep = write_sweep(tmp_path, POLARIS.format(results=tmp_path / "results"))
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "pbs", "--dry-run",
                         "--study-id", "s1")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("qsub ")]
    assert len(lines) == 5
    study_dir = tmp_path / "results" / "s1"
    assert f"mkdir -p {study_dir}" in out
    for line, ranks, nodes, per_node, queue in zip(
            lines, [1, 2, 4, 8, 16], [1, 1, 1, 2, 4], [1, 2, 4, 4, 4],
            ["debug", "debug", "debug", "debug", "preemptable"]):
        argv = shlex.split(line)
        options = dict(zip(argv[1:-1:], argv[2:]))
        assert f"select={nodes}:system=polaris" in argv
        assert "walltime=0:20:00" in argv
        assert options["-q"] == queue and options["-A"] == "MYPROJ"
        assert ("-r" in argv) == (queue == "preemptable")
        assert argv[-1] == str(REPO / "jobs" / "polaris_ddp.pbs")
        exported = dict(item.split("=", 1) for item in options["-v"].split(","))
        assert exported == {
            "CONFIG": "default", "EPOCHS": "3", "NGPUS_PER_NODE": str(per_node),
            "TRAIN_ARGS": "--batch-size 512 --batch-mode global --precision bf16",
            "RESULTS_DIR": str(study_dir)}
        assert ranks == nodes * per_node
    assert calls(fake_qsub, "qsub") == []  # a dry run submits nothing
    assert not study_dir.exists()


def test_slurm_dry_run_checks_with_test_only_and_submits_nothing(tmp_path, capsys,
                                                                  fake_sbatch):
    sweep = write_sweep(tmp_path, f"""\
        name: sl
        mode: weak
        ranks: [1, 2]
        batch_size: 64
        epochs: 2
        results_dir: {tmp_path / 'results'}
        slurm: {{partition: debug, time: "0:10:00", cpu_only: true, cpus_per_task: 1}}
        """)
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "slurm", "--dry-run",
                         "--study-id", "s2")
    assert code == 0, err
    assert "checked: sbatch --test-only" in out
    lines = [shlex.split(line) for line in out.splitlines() if line.startswith("sbatch ")]
    assert len(lines) == 2
    study_dir = tmp_path / "results" / "s2"
    for argv, tasks in zip(lines, [1, 2]):
        options = dict(zip(argv[1:], argv[2:]))
        assert options["--nodes"] == "1" and options["--ntasks-per-node"] == str(tasks)
        assert options["--gpus-per-node"] == "0" and options["--cpus-per-task"] == "1"
        assert options["--partition"] == "debug" and options["--time"] == "0:10:00"
        assert options["--output"] == f"{study_dir}/slurm-%j.out"
        export = next(a for a in argv if a.startswith("--export="))[len("--export="):]
        assert export.split(",") == [
            "ALL", "CONFIG=default", "EPOCHS=2",
            "TRAIN_ARGS=--batch-size 64 --batch-mode per-rank", f"RESULTS_DIR={study_dir}",
            "CPU_ONLY=1"]
        assert argv[-1] == str(REPO / "jobs" / "slurm.sh")
    made = calls(fake_sbatch, "sbatch")
    assert len(made) == 2 and all("--test-only" in c and "--parsable" not in c for c in made)

    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "slurm", "--dry-run",
                         "--no-test-only")
    assert code == 0 and "format only" in out
    assert len(calls(fake_sbatch, "sbatch")) == 2


# --- (c) refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize("change, extra, message", [
    ({"queue": "debug"}, [], "3 nodes, but Polaris queue debug takes 1-2 nodes"),
    ({"walltime": '"1:00"'}, [], "walltime '1:00' is not H:MM:SS"),
    ({"walltime": '"0:90:00"'}, [], "is not H:MM:SS"),
    ({"walltime": '"2:00:00"', "queue": "debug"}, [], "exceeds queue debug's limit of 1:00:00"),
    ({"walltime": '"0:02:00"'}, [], "under the 5-minute minimum"),
    ({"account": "null"}, [], "no account"),
    ({"queue": "debug-scaling"}, [], "allows 1 (1 job running/accruing/queued per user)"),
    ({"queue": "small"}, [], "'small' is not a Polaris queue you can submit to"),
    ({"queue": "prod"}, [], "Polaris queue prod takes 10-496 nodes"),
])
def test_pbs_refuses_the_whole_study(tmp_path, capsys, fake_qsub, change, extra, message):
    settings = {"queue": "debug-scaling", "walltime": '"0:20:00"', "account": "MYPROJ"}
    settings.update(change)
    sweep = write_sweep(tmp_path, f"""\
        mode: strong
        nodes: [1, 3]
        ranks_per_node: 4
        results_dir: {tmp_path / 'results'}
        pbs:
          queue: {settings['queue']}
          walltime: {settings['walltime']}
          account: {settings['account']}
        """)
    for dry in ([], ["--dry-run"]):
        code, out, err = cli(capsys, "submit", sweep, "--scheduler", "pbs", *dry, *extra)
        assert code == 2, (out, err)
        assert "refused, nothing submitted" in err and message in err, err
    assert calls(fake_qsub, "qsub") == []
    assert not (tmp_path / "results").exists()


def test_account_on_the_command_line_satisfies_the_rule(tmp_path, capsys, fake_qsub):
    sweep = write_sweep(tmp_path, POLARIS.format(results=tmp_path / "r").replace(
        "account: MYPROJ", "account: null"))
    assert cli(capsys, "submit", sweep, "--scheduler", "pbs", "--dry-run")[0] == 2
    code, out, _ = cli(capsys, "submit", sweep, "--scheduler", "pbs", "--dry-run",
                       "--account", "OTHER")
    assert code == 0 and out.count("-A OTHER") == 5


def test_slurm_refuses_when_test_only_fails_for_any_run(tmp_path, capsys, fake_sbatch):
    sweep = write_sweep(tmp_path, f"""\
        mode: strong
        nodes: [1, 2]
        ranks_per_node: 2
        results_dir: {tmp_path / 'results'}
        """)
    code, out, err = cli(capsys, "submit", sweep, "--scheduler", "slurm")
    assert code == 2
    assert "run n2-r4-rep0: sbatch --test-only refused it" in err
    assert "Requested node configuration is not available" in err
    assert all("--test-only" in c for c in calls(fake_sbatch, "sbatch"))  # none submitted
    assert not (tmp_path / "results").exists()


def test_slurm_time_format_is_checked_without_sbatch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    sweep = write_sweep(tmp_path, 'mode: strong\nranks: [1]\nslurm: {time: "1h"}\n')
    code, _, err = cli(capsys, "submit", sweep, "--scheduler", "slurm", "--dry-run")
    assert code == 2 and "slurm.time '1h' is not a Slurm time" in err


# --- submission records and the report on synthetic runs -----------------------------------

def fake_metrics(run_dir: Path, *, ranks: int, global_batch: int, epoch_s: list[float],
                 status: str = "completed", job_id: str | None = None,
                 comm_s: float | None = None, device: str = "cpu") -> None:
    """A metrics.json as the trainer writes it, with chosen timings."""
    run_dir.mkdir(parents=True)
    samples = 4096
    epochs = [{"epoch": i, "train_s": s, "eval_s": 0.1, "train_samples": samples,
               "train_samples_per_s": samples / s, "comm_s": comm_s if ranks > 1 else None,
               "train_acc": 90.0, "train_loss": 0.3, "val_acc": 91.0 + i, "val_loss": 0.3}
              for i, s in enumerate(epoch_s)]
    metrics = {
        "schema": 1, "run_id": run_dir.name, "status": status, "config": {},
        "model": {"name": "cnn", "parameters": 1_199_882},
        "world": {"world_size": ranks, "nodes": 1, "local_world_size": ranks,
                  "launcher": "torchrun", "backend": "gloo" if ranks > 1 else None,
                  "device": device, "cpu_threads": 1, "hostnames": ["h"] * ranks,
                  "job_id": job_id},
        "batch": {"global": global_batch, "per_rank": global_batch / ranks, "mode": "global",
                  "steps_per_epoch": samples // global_batch, "lr": 0.001, "precision": "fp32"},
        "samples": {"train": samples}, "epochs": epochs,
        "final": {"test_acc": 92.5, "val_acc": epochs[-1]["val_acc"]} if status == "completed"
        else {},
        "versions": {"torch": "x", "mnist_hpc": "0.1.0", "git_commit": "abc"},
    }
    if status == "failed":
        metrics["error"] = "rank 1: RuntimeError: peer vanished"
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


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


# --- the model --------------------------------------------------------------------------------

def test_ring_allreduce_model():
    nbytes = 1_199_882 * 4
    assert scaling.allreduce_s(1, nbytes, 25, 10) == 0.0
    two = scaling.allreduce_s(2, nbytes, 25, 10)
    assert two == pytest.approx(nbytes / 25e9 + 2 * 10e-6)
    big = scaling.allreduce_s(1024, nbytes, 25, 0)
    assert big == pytest.approx(2 * 1023 / 1024 * nbytes / 25e9)
    rows = scaling.predict([1, 2, 4, 512], "strong", 512, 1e-5, nbytes, 1.25, 50, 1)
    assert rows[0]["speedup"] == 1.0 and rows[0]["efficiency"] == 1.0
    assert [r["efficiency"] for r in rows] == sorted((r["efficiency"] for r in rows),
                                                     reverse=True)
    weak = scaling.predict([1, 8], "weak", 128, 1e-5, nbytes, 25, 10, 1)
    assert weak[1]["per_rank_batch"] == 128 and weak[1]["step_ms"] > weak[0]["step_ms"]


def test_model_subcommand(capsys):
    code, out, err = cli(capsys, "model", "--compute-ms", "20", "--network", "1.25,50",
                         "--ranks", "1,2,64")
    assert code == 0, err
    assert "| 64 |" in out and "4.80 MB" in out


# --- (a) e2e: a local study with torchrun, then the report ------------------------------------

@pytest.mark.e2e
def test_local_study_then_report(tmp_path):
    results = tmp_path / "results"
    sweep = write_sweep(tmp_path, f"""\
        name: e2e
        mode: strong
        ranks: [1, 2]
        batch_size: 256
        epochs: 2
        train_args: --device cpu --limit 512 --timeout 60
        results_dir: {results}
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
    assert list(rows[0]) == list(scaling.CSV_COLUMNS)
    assert [(int(r["ranks"]), int(r["global_batch"]), float(r["per_rank_batch"]))
            for r in rows] == [(1, 256, 256.0), (2, 256, 128.0)]
    assert float(rows[0]["speedup"]) == 1.0 and float(rows[0]["efficiency"]) == 1.0
    for row in rows:
        assert float(row["efficiency"]) == pytest.approx(float(row["speedup"]) / int(row["ranks"]))
        assert float(row["samples_per_s"]) > 0 and float(row["epoch_s"]) > 0
        assert 0 <= float(row["test_acc"]) <= 100
    assert rows[0]["comm_s"] == "" and float(rows[1]["comm_s"]) > 0  # gloo, 2 ranks only
    metrics = json.loads((study / "n1-r2-rep0" / "metrics.json").read_text())
    assert float(rows[1]["epoch_s"]) == pytest.approx(metrics["epochs"][1]["train_s"])

    import matplotlib.image

    for name in ("throughput.png", "efficiency.png", "epoch_time.png"):
        path = study / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    md = (study / "scaling.md").read_text()
    assert "excluded as warm-up" in md and "Failed or incomplete" not in md


# --- (e) e2e: a 2-point study on a real one-node Slurm cluster --------------------------------

@pytest.mark.e2e
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
        train_args: --limit 512 --timeout 60
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
