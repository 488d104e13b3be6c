"""Shared by the scaling tests: sweep files, fake ``qsub``/``sbatch`` that record their calls
(so "nothing was submitted" is proven, not assumed), synthetic run directories, and the CLI
run in-process."""

from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

import pytest

from mnist_hpc.scaling import cli as scaling_cli

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
    code = scaling_cli.main([str(a) for a in args])
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
