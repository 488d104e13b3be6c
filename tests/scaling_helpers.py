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

from mnist_hpc.run import metrics_json
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


def fake_metrics(run_dir: Path, *, status: str = "completed", **figures) -> None:
    """A complete metrics.json as the trainer writes it (through its writer), with chosen
    timings (``figures``: those of ``metrics_record``)."""
    run_dir.mkdir(parents=True)
    error = "rank 1: RuntimeError: peer vanished" if status == metrics_json.FAILED else None
    metrics_json.write(run_dir, metrics_record(run_dir.name, status=status, **figures), status,
                       error)


def metrics_record(run_id: str, *, ranks: int = 1, global_batch: int = 256,
                   epoch_s: tuple[float, ...] = (1.0,), status: str = "completed",
                   job_id: str | None = None, comm_s: float | None = None,
                   device: str = "cpu") -> metrics_json.Metrics:
    """Every key of metrics.json, as the trainer fills them, with chosen timings."""
    samples = 4096
    spread = metrics_json.Spread(min=1.0, median=1.0, max=1.0, std=0.0)
    epochs = [metrics_json.Epoch(
        epoch=i, train_s=s, eval_s=0.1, train_samples=samples, train_samples_per_s=samples / s,
        comm_s=comm_s if ranks > 1 else None, train_acc=90.0, train_loss=0.3,
        val_acc=91.0 + i, val_loss=0.3, tflops=0.5, mfu=None,
        ranks=metrics_json.Ranks(
            data_s=spread, compute_s=spread, comm_s=None, eval_s=spread,
            slowest=metrics_json.Slowest(rank=0, host="h", compute_s=1.0,
                                         compute_over_median=1.0),
            stragglers=[], straggler_threshold=1.2, peak_memory_bytes=2**30))
        for i, s in enumerate(epoch_s)]
    final = metrics_json.Final(
        test_acc=92.5, test_loss=0.25, val_acc=epochs[-1]["val_acc"], wall_s=sum(epoch_s) + 5,
        data_load_s=1.0, init_process_group_s=0.5, train_s=sum(epoch_s), warmup_s=0.0,
        startup_s=2.0)
    return metrics_json.Metrics(
        schema=metrics_json.SCHEMA, run_id=run_id, status=status, config={},
        model=metrics_json.Model(name="cnn", parameters=1_199_882, flops_per_sample=7e7),
        world=metrics_json.World(
            world_size=ranks, nodes=1, local_world_size=ranks, launcher="torchrun",
            backend="gloo" if ranks > 1 else None, device=device, device_name=None,
            cpu_threads=1, hostnames=["h"] * ranks, job_id=job_id, master_addr=None),
        batch=metrics_json.Batch({
            "global": global_batch, "per_rank": global_batch / ranks, "mode": "global",
            "steps_per_epoch": samples // global_batch, "lr": 0.001, "precision": "fp32",
            "cuda_graphs": False}),
        samples=metrics_json.Samples(train=samples, val=samples),
        epochs=epochs, final=final if status == metrics_json.COMPLETED else {},
        resumed_from=[],
        versions=metrics_json.Versions(
            python="3.11", torch="x", torchvision=None, mnist_hpc="0.1.0", git_commit="abc",
            cuda=None, platform="Linux", argv=["train.py"], hostname="h"))


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))
