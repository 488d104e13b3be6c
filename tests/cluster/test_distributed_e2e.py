"""Distributed training with real processes: torchrun and MPICH's mpiexec, gloo on CPU.

What these show: the launchers' real environments are read as documented; each launch makes
one run directory with exact, all-reduced sample counts; 1 process, 2 torchrun ranks and 2 MPI
ranks train the same numbers; DDP through the engine takes the very steps of textbook
single-process training; and a rank that dies or raises ends the whole job promptly, says
which rank it was, and never leaves a run marked completed.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, clean_env, error_lines, only_run_dir, rank_tag, read_metrics
from fault_injection import MESSAGES
from launchers import LIMIT, PYTHON, launch, launcher, trained

from mnist_hpc.run.rundir import LOCK


LAUNCHER_NAMES = {"torchrun": "torchrun", "mpiexec": "mpich"}

# --- the launchers' own environments ---------------------------------------------------------

SHOW_ENV = """
import json, os
from mnist_hpc.job import layout
env = layout.detect(os.environ)
print("DETECTED " + json.dumps({"names": sorted(os.environ), "rank": env.rank,
      "local_rank": env.local_rank, "world_size": env.world_size,
      "local_world_size": env.local_world_size, "launcher": env.launcher}))
"""

# What each launcher sets, as observed from the launcher itself (and documented: torchrun's
# "Environment Variables" in torch/distributed/run.py; MPICH hydra's, see test_launcher.py).
REAL_NAMES = {
    "torchrun": {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT"},
    "mpiexec": {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
}


@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_detects_the_real_launcher_environment(kind):
    prefix = launcher(kind)
    if kind == "torchrun":
        prefix += ["--no-python", PYTHON]
    result = launch(prefix + ["-c", SHOW_ENV], timeout=120)
    assert result.returncode == 0, str(result)
    # mpiexec forwards both ranks' output through one pipe, so one rank's line can land on the
    # end of the other's: read each object from its marker, wherever it stands
    ranks = [json.JSONDecoder().raw_decode(part)[0]
             for part in result.output.split("DETECTED ")[1:]]
    assert len(ranks) == 2, str(result)
    for found in ranks:
        assert REAL_NAMES[kind] <= set(found["names"]), str(result)
        assert (found["world_size"], found["local_world_size"], found["launcher"]) == (
            2, 2, LAUNCHER_NAMES[kind])
    assert sorted((r["rank"], r["local_rank"]) for r in ranks) == [(0, 0), (1, 1)]


# --- one run directory, exact counts ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_two_ranks_write_one_complete_run_directory(kind, tmp_path_factory):
    run_dir = trained(kind, True, tmp_path_factory)
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    world = metrics["world"]
    assert world["world_size"] == 2 and world["local_world_size"] == 2
    assert world["nodes"] == 1 and len(world["hostnames"]) == 2
    assert (world["launcher"], world["backend"], world["device"]) == (
        LAUNCHER_NAMES[kind], "gloo", "cpu")
    if kind == "mpiexec":  # no launcher address: rank 0's host, sent over MPI
        assert world["master_addr"] == socket.gethostname()
    # --limit keeps the first LIMIT images of each split; 250 + 249 per rank, all-reduced
    assert metrics["samples"] == {"train": LIMIT, "val": LIMIT, "test": LIMIT}
    assert len(metrics["epochs"]) == 2
    for epoch in metrics["epochs"]:
        assert epoch["train_s"] > 0 and epoch["eval_s"] > 0
        assert epoch["train_samples"] == LIMIT and epoch["train_samples_per_s"] > 0
        assert epoch["comm_s"] is not None and 0 <= epoch["comm_s"] <= epoch["train_s"]
    assert metrics["final"]["init_process_group_s"] > 0
    assert 0 <= metrics["final"]["test_acc"] <= 100
    assert np.load(run_dir / "history.npy").shape == (2, 4)
    for name in ("history.csv", "config.yaml", "loss.png", "accuracy.png"):
        assert (run_dir / name).stat().st_size > 0


# --- the same numbers on 1 and 2 ranks ----------------------------------------------------------

def test_one_process_and_two_ranks_train_the_same_numbers(tmp_path_factory):
    """The seed network, dropout included, in a shuffled order: 2 ranks x 128 take the steps
    of 1 x 256, step by step (each step's global loss in steps.jsonl), because each sample's
    dropout mask is keyed by the sample, not drawn from its rank's generator. (--no-shuffle
    cuts the identity order into the same slices: data.batches.BatchPlan, tests/unit.)"""
    runs = {kind: trained(kind, True, tmp_path_factory)
            for kind in ("single", "torchrun", "mpiexec")}
    history = {kind: np.load(run_dir / "history.npy") for kind, run_dir in runs.items()}
    steps = {kind: [json.loads(line)["loss"] for line in
                    (run_dir / "steps.jsonl").read_text().splitlines()]
             for kind, run_dir in runs.items()}
    assert len(steps["single"]) == 4
    assert history["single"][1, 1] < history["single"][0, 1], "the loss did not go down"
    for kind in ("torchrun", "mpiexec"):
        np.testing.assert_allclose(steps[kind], steps["single"], rtol=1e-6,
                                   err_msg=f"{kind}'s steps differ from one process's")
        np.testing.assert_allclose(history[kind], history["single"], rtol=1e-5,
                                   err_msg=f"{kind} differs from one process")
        assert read_metrics(runs[kind])["final"]["test_acc"] == pytest.approx(
            read_metrics(runs["single"])["final"]["test_acc"], rel=1e-5)


def test_sync_bn_on_two_ranks_trains_the_steps_of_one_process(tmp_path):
    """--sync-bn through the real entry point (under mpiexec: the launcher plays no part in
    it): the ResNet's BatchNorm statistics span both ranks, so 2 ranks x 64 images take the 2
    steps of one process on 128, to float rounding.
    (Rank 0 alone once ran a training forward to count FLOPs, whose BatchNorm all-reduce
    paired with the other rank's buffer broadcast: a hang at step 1.) Measured on a 2-core
    CPU: with --sync-bn the losses differ from one process's by 2.6e-5 at most; with per-rank
    statistics the training loss by 4.5e-4."""
    args = ["-m", "mnist_hpc.train", "--config", "resnet", "--epochs", "1", "--limit", "256",
            "--batch-size", "128", "--precision", "fp32", "--device", "cpu", "--sync-bn",
            "--timeout", "60", "--run-id", "r", "--no-plots"]

    def train_on(ranks: str, results: Path) -> np.ndarray:
        result = launch(launcher(ranks) + args + ["--results-dir", str(results)], timeout=240)
        assert result.returncode == 0, str(result)
        return np.load(results / "r" / "history.npy")

    two, one = train_on("mpiexec", tmp_path / "two"), train_on("single", tmp_path / "one")
    np.testing.assert_allclose(two[:, [1, 3]], one[:, [1, 3]], atol=5e-5)  # losses
    assert np.abs(two[:, [0, 2]] - one[:, [0, 2]]).max() <= 0.2  # accuracies: 2 images


def test_shuffling_changes_the_numbers(tmp_path_factory):
    """Else the shuffled equivalence above would prove nothing beyond the fixed order."""
    fixed = np.load(trained("single", False, tmp_path_factory) / "history.npy")
    shuffled = np.load(trained("single", True, tmp_path_factory) / "history.npy")
    assert not np.allclose(fixed, shuffled, rtol=1e-3)


def steps_differ(got: list, want: list, atol: float) -> bool:
    return any(not torch.allclose(g[key], w[key], rtol=1e-5, atol=atol)
               for g, w in zip(got, want) for key in w)


def test_ddp_steps_equal_single_process_steps(tmp_path):
    """2 ranks x (128 | 128 | 2 and 1) through DDP and the engine take exactly the steps of one
    process on the global batches of 256, 256 and 3, after every step: the cnn with SGD and
    Adam, the ResNet with --sync-bn; without it the ResNet's BatchNorm sees half batches and
    its steps differ (the comparison can fail)."""
    script = str(REPO / "tests" / "ddp_steps.py")
    for kind in ("single", "torchrun"):
        result = launch(launcher(kind) + [script, str(tmp_path)], timeout=300)
        assert result.returncode == 0, str(result)
    # SGD's update is the gradient; Adam's is about lr (1e-3) per weight, so its tolerance
    # only absorbs float noise in near-zero gradients. The ResNet's float noise grows about
    # 20x a step, and its last batch holds 3 images, whose BatchNorm backward amplifies it.
    # Measured, largest difference after steps 1 / 2 / 3 (2 ranks against one process, a
    # 2-core CPU): 3e-6 / 1.6e-5 / 7.5e-4 with --sync-bn; 1.2e-3 / 1.8e-3 / 2.6e-2 without;
    # the cnn with SGD 4e-7 at most. So each
    # step has its tolerance: (full batches, the 3-image batch).
    for case, optimizer, atols in (("cnn", "sgd", (1e-6, 1e-6)), ("cnn", "adam", (2e-5, 2e-5)),
                                   ("resnet-syncbn", "sgd-bn", (1e-4, 2e-3)),
                                   ("resnet", "sgd-bn", (1e-4, 2e-3))):
        reference = torch.load(tmp_path / f"plain-{case}-{optimizer}-w1-rank0.pt")
        assert len(reference) == 3
        for name in ("w1-rank0", "w2-rank0", "w2-rank1"):
            steps = torch.load(tmp_path / f"engine-{case}-{optimizer}-{name}.pt")
            assert len(steps) == len(reference)
            if case == "resnet" and name != "w1-rank0":
                assert steps_differ(steps[:1], reference[:1], atols[0]), \
                    f"{name}: per-rank BatchNorm"
                continue
            for step, (got, want) in enumerate(zip(steps, reference)):
                atol = atols[step == len(reference) - 1]
                for key in want:
                    torch.testing.assert_close(
                        got[key], want[key], rtol=1e-5, atol=atol,
                        msg=lambda m: f"{case} {optimizer} {name} step {step} {key}: {m}")


def test_no_rank_leaves_before_rank_0_has_written_the_last_record(tmp_path):
    """Under mpiexec every rank has finalized MPI at the rendezvous, and then hydra ends the
    other processes as soon as one exits, even with exit 0 (measured: MPICH 4). Rank 0 writes
    the completed metrics.json 2 s late (a slow file system): the others wait for it."""
    command = launcher("mpiexec") + [str(REPO / "tests" / "fault_injection.py"), "--limit",
                                     "256", "--epochs", "1", "--batch-size", "64", "--device",
                                     "cpu", "--backend", "gloo", "--no-plots", "--timeout", "60",
                                     "--results-dir", str(tmp_path)]
    result = launch(command, env=clean_env(FAULT="late", FAULT_SLEEP="2"), timeout=120)
    assert result.returncode == 0, str(result)
    assert "Summary of run" in result.output, str(result)
    run_dir = only_run_dir(tmp_path)
    assert read_metrics(run_dir)["status"] == "completed", str(result)
    assert not list(run_dir.glob(".*.tmp")), str(result)


# --- failures end the job -----------------------------------------------------------------------

FAULT_ARGS = ["--limit", "1000", "--epochs", "2", "--batch-size", "64", "--device", "cpu",
              "--backend", "gloo", "--no-plots"]
TIMEOUT = 60  # the collective timeout given to the trainer: failures must not wait for it


def run_with_fault(kind: str, fault: str, tmp_path):
    command = launcher(kind) + [str(REPO / "tests" / "fault_injection.py"), *FAULT_ARGS,
                                "--timeout", str(TIMEOUT), "--results-dir", str(tmp_path)]
    env = clean_env(FAULT=fault, FAULT_RANK="1", FAULT_STEP="3")
    result = launch(command, env=env, timeout=TIMEOUT + 60)
    metrics = read_metrics(only_run_dir(tmp_path))
    assert metrics["status"] != "completed", str(result)
    assert result.returncode != 0, str(result)
    # found through the dead peer's closed sockets, not by waiting for the collective timeout
    # (an idle machine takes about 6 s, start-up included)
    assert result.seconds < TIMEOUT, str(result)
    assert "Timed out" not in result.output, str(result)
    return result, metrics


@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_a_killed_rank_ends_the_job_and_is_named(kind, tmp_path):
    result, metrics = run_with_fault(kind, "kill", tmp_path)
    killed = re.search(r"rank 1 \(pid (\d+)\) sends itself SIGKILL", result.output)
    assert killed, str(result)
    if kind == "torchrun":
        # torchrun's summary names the rank and the signal; rank 0 found the broken connection
        # and wrote the failure before torchrun stopped it
        root_cause = result.output.split("Root Cause", 1)[1]
        assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", root_cause), str(result)
        assert "SIGKILL" in root_cause, str(result)
        assert metrics["status"] == "failed", str(result)
        assert "error: rank 0 failed" in result.output
    else:
        # hydra names a process by pid and host, then SIGKILLs the survivors at once, so
        # rank 0 may not get to write "failed". The pid is rank 1's, except when the
        # clean-up's SIGKILL reached rank 0 first: hydra then names rank 0, whose pid the
        # run directory's lock file holds (1 suite run in about 35; mpiexec -n 2 of a
        # script whose rank 1 kills itself named the survivor 1 time in 5)
        assert "BAD TERMINATION" in result.output, str(result)
        named = re.search(r"PID (\d+) RUNNING AT", result.output)
        rank_0 = (only_run_dir(tmp_path) / LOCK).read_text().split()[-1]
        assert named and named.group(1) in (killed.group(1), rank_0), str(result)
        assert "EXIT CODE: 9" in result.output, str(result)
        assert metrics["status"] in ("running", "failed")


@pytest.mark.parametrize("kind", ["torchrun", "mpiexec"])
def test_a_rank_that_raises_fails_every_rank(kind, tmp_path):
    result, metrics = run_with_fault(kind, "runtime", tmp_path)
    # rank 1 names its own failure once, tagged with its rank and host, and where it was
    named = [line for line in error_lines(result.output) if "error: rank 1 " in line]
    assert named == [f"{rank_tag(1)}error: rank 1 failed: RuntimeError: {MESSAGES['runtime']}; "
                     f"at epoch 0, step 4"], str(result)
    assert "error: rank 0 failed:" in result.output, str(result)  # its peer vanished
    assert metrics["status"] == "failed", str(result)
    assert metrics["error"].startswith("rank 0: RuntimeError"), metrics["error"]
    if kind == "torchrun":
        root_cause = result.output.split("Root Cause", 1)[1]
        assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s+exitcode\s*:\s*1", root_cause), (
            str(result))
        # torchrun's report lists each rank that exited non-zero (or was signalled)
        codes = re.findall(r"^\s*exitcode\s+:\s*(-?\d+)", result.output, re.MULTILINE)
        assert len(codes) == 2 and all(int(c) != 0 for c in codes), str(result)
