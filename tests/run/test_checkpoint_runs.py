"""Checkpoints: refused when they belong to another recipe, loaded only as data, written so
that a crash never leaves a torn file, and found the way a requeued job looks for them.

Most tests call ``train.main`` in-process (a refused resume fails in well under a second);
the crash tests kill a real process in the middle of a write.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, clean_env, error_lines, read_metrics, run_trainer

from mnist_hpc import files, train
from mnist_hpc.config import flags
from mnist_hpc.config.resolve import recipe_hashes
from mnist_hpc.data.batches import BatchPlan
from mnist_hpc.errors import UsageError
from mnist_hpc.run import checkpoint, rundir


@pytest.mark.parametrize("change, problem", [
    (["--lr", "0.01"], r"recipe \(lr, global batch, optimizer, seed, \.\.\.\) differs"),
    (["--seed", "7"], r"recipe \(.*\) differs"),
    (["--optimizer", "sgd"], r"recipe \(.*\) differs"),
    (["--model", "seed"], r"model 'cnn' != 'seed'"),
    (["--batch-size", "32"], r"recipe \(.*\) differs"),
], ids=["lr", "seed", "optimizer", "model", "batch-size"])
def test_checkpoint_of_another_recipe_is_refused_and_the_run_left_alone(run_dir, capsys,
                                                                        change, problem):
    before = snapshot(run_dir)
    code, out, err = run_main([*ARGS, "--epochs", "2", *change, "--resume", str(run_dir)],
                              capsys)
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith("error: checkpoint does not match this run: ")
    assert re.search(problem, line), line
    assert line.endswith("rerun with the original settings, or pass --resume-force")
    assert snapshot(run_dir) == before, "a refused resume must not touch the run it refused"


def test_resume_force_accepts_another_lr_and_records_why(run_dir, capsys):
    code, out, err = run_main([*ARGS, "--epochs", "2", "--lr", "0.002", "--resume",
                               str(run_dir), "--resume-force"], capsys)
    assert code == 0, err
    assert "(forced: recipe" in out
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["resumed_from"][-1]["epoch"] == 2
    assert any("recipe" in w for w in metrics["resumed_from"][-1]["warnings"])


@pytest.mark.parametrize("how", ["atomic", "checkpoint"])
def test_a_kill_mid_write_leaves_the_previous_file_whole(tmp_path, how):
    path = crash_mid_write(how, tmp_path)
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 1 and torch.equal(payload["blob"], torch.full((200_000,), 1.0))
    # the torn temporary file has a name no reader looks for
    assert all(p.name.startswith(".checkpoint.pt.") for p in tmp_path.iterdir()
               if p.name != "checkpoint.pt")


def test_the_crash_test_catches_a_write_without_rename(tmp_path):
    """The control: the same crash against a plain in-place write does tear the file, so the
    test above would fail if atomic_write lost its rename."""
    path = crash_mid_write("naive", tmp_path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)


def test_resume_auto_restarts_its_own_run_that_died_before_a_checkpoint(tmp_path, capsys):
    """A requeued job whose first attempt was killed in epoch 0 left a directory without a
    checkpoint: the same command line must start it again, not fail on the directory."""
    results_dir = tmp_path / "results"
    (results_dir / "job-7").mkdir(parents=True)
    (results_dir / "job-7" / "metrics.json").write_text('{"status": "running"}')
    argv = [*ARGS, "--epochs", "1", "--results-dir", str(results_dir), "--run-id", "job-7",
            "--resume", "auto"]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    assert "Resuming" not in out
    assert read_metrics(results_dir / "job-7")["status"] == "completed"
    # the finished run (one epoch: no checkpoint) is not started a second time: the rerun
    # job is a no-op that exits 0 and changes nothing
    before = {p.name: p.read_bytes() for p in (results_dir / "job-7").iterdir() if p.is_file()}
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    assert out.strip() == (f"Run {results_dir / 'job-7'} is complete; nothing to do (start a "
                           f"new run with another --run-id)")
    after = {p.name: p.read_bytes() for p in (results_dir / "job-7").iterdir() if p.is_file()}
    assert after == before


def test_refused_resume_in_a_real_process_prints_one_line(run_dir):
    """The same refusal as above, through the command line, without a traceback."""
    result = run_trainer([*ARGS, "--epochs", "2", "--lr", "0.01", "--resume", str(run_dir)],
                         timeout=120)
    assert result.returncode == 2
    assert len(error_lines(result.stderr)) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["seed", "cnn", "resnet", "vit"])
def test_every_model_resumes_in_bf16_to_the_numbers_of_an_unbroken_run(model, tmp_path, capsys):
    """Each network through a checkpoint and back, in bf16: a run stopped by a time limit
    shorter than its reserve (so after its first step, with a checkpoint) resumes and trains
    to the very same history as an unbroken run."""
    # 2 steps of 32 an epoch: the ResNet and the ViT in bf16 are slow on a CPU
    argv = [*ARGS, "--limit", "64", "--batch-size", "32", "--model", model, "--precision",
            "bf16", "--epochs", "2", "--results-dir", str(tmp_path)]
    code, out, err = run_main([*argv, "--run-id", "unbroken"], capsys)
    assert code == 0, err
    code, out, err = run_main([*argv, "--run-id", "resumed", "--time-limit", "1"], capsys)
    assert code == 75, err
    resumed = tmp_path / "resumed"
    code, out, err = run_main([*argv, "--resume", str(resumed)], capsys)
    assert code == 0, err
    assert f"Resuming {resumed} at epoch 0, step 1" in out
    metrics = read_metrics(resumed)
    assert metrics["status"] == "completed"
    assert metrics["batch"]["precision"] == "bf16"
    unbroken = tmp_path / "unbroken"
    assert (resumed / "history.csv").read_text() == (unbroken / "history.csv").read_text()
    assert metrics["final"]["test_acc"] == read_metrics(unbroken)["final"]["test_acc"]


ARGS = ["--limit", "128", "--batch-size", "64", "--device", "cpu", "--no-plots"]


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """train.main in this process: (exit code, stdout, stderr)."""
    code = train.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A completed 2-epoch run; its checkpoint.pt is its final state (after epoch 1)."""
    results_dir = tmp_path_factory.mktemp("results")
    code = train.main([*ARGS, "--epochs", "2", "--results-dir", str(results_dir),
                       "--run-id", "base"])
    assert code == 0
    assert (results_dir / "base" / "checkpoint.pt").is_file()
    return results_dir / "base"


@pytest.fixture
def run_dir(finished_run, tmp_path) -> Path:
    """A private copy of the finished run, to resume or damage, marked as stopped after the
    epoch its checkpoint holds (a completed run is never resumed)."""
    copy = Path(shutil.copytree(finished_run, tmp_path / "results" / "base"))
    files.write_json(copy / "metrics.json", {**read_metrics(copy), "status": "preempted"})
    return copy


def test_resume_force_cannot_put_weights_into_another_network(run_dir, capsys):
    before = snapshot(run_dir)
    code, out, err = run_main([*ARGS, "--epochs", "2", "--model", "resnet", "--resume",
                               str(run_dir), "--resume-force"], capsys)
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith("error: the checkpoint does not fit this run (RuntimeError: ")
    assert "rerun with the original --model and --optimizer" in line
    assert "Traceback" not in err
    assert snapshot(run_dir) == before


def test_a_completed_runs_checkpoint_is_its_final_state_with_the_models_weights(finished_run):
    payload = checkpoint.load(finished_run / "checkpoint.pt")
    assert (payload["epoch"], payload["step"], len(payload["history"])) == (2, 0, 2)
    weights = torch.load(finished_run / "model.pt", weights_only=True)["state_dict"]
    assert weights.keys() == payload["model"].keys()
    assert all(torch.equal(weights[key], value) for key, value in payload["model"].items())


@pytest.mark.parametrize("world_size, args, fits", [
    (4, [], True),  # the global batch of 64 split over 4 ranks: the same steps
    (4, ["--batch-mode", "per-rank", "--batch-size", "16"], True),  # 4 x 16 = 64
    (2, ["--batch-mode", "per-rank", "--batch-size", "64"], False),  # 2 x 64 = 128
    (2, ["--batch-size", "32", "--scale-lr"], False),
    (2, ["--lr", "0.0015", "--scale-lr"], True),  # 2 x 0.0015: the lr one process used
], ids=["global", "per-rank-same-batch", "per-rank-larger-batch", "other-batch",
        "scaled-lr"])
def test_a_checkpoint_resumes_at_any_world_size_that_takes_the_same_steps(
        finished_run, world_size, args, fits):
    """Ranks draw nothing of their own (dropout is keyed per sample), so what must match is
    the steps: the global batch and the learning rate the ranks use, not the world size."""
    payload = checkpoint.load(finished_run / "checkpoint.pt")
    config = flags.parse_args([*ARGS, "--epochs", "2", "--lr", "0.003", *args])
    hashes = recipe_hashes(config, False, world_size)
    steps = BatchPlan(128, config.global_batch(world_size), 0, world_size).steps_per_epoch
    if fits:
        assert checkpoint.check_compatible(payload, hashes, "cnn", steps, force=False) == []
    else:
        with pytest.raises(UsageError, match=r"recipe \(lr, global batch, .*\) differs"):
            checkpoint.check_compatible(payload, hashes, "cnn", steps, force=False)


def test_a_last_batch_too_small_for_the_ranks_is_refused(finished_run):
    """A last global batch with fewer samples than ranks is dropped, so such a world size
    takes fewer steps an epoch than the run it would continue."""
    payload = {**checkpoint.load(finished_run / "checkpoint.pt"), "steps_per_epoch": 3}
    config = flags.parse_args([*ARGS, "--epochs", "2"])
    with pytest.raises(UsageError, match=r"3 steps per epoch at world size 1, 2 at this one "
                                         r"\(the last batch is too small to split"):
        checkpoint.check_compatible(payload, recipe_hashes(config, False), "cnn", 2, False)


def test_a_checkpoint_from_before_keyed_dropout_is_refused_with_the_reason(run_dir, capsys):
    path = run_dir / "checkpoint.pt"
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": 1}, path)
    code, out, err = run_main([*ARGS, "--epochs", "2", "--resume", str(run_dir)], capsys)
    assert code == 2
    assert error_lines(err) == [f"error: {path} was written by mnist_hpc before dropout was "
                                f"keyed per sample (checkpoint format 1): its run cannot go on "
                                f"with the same random draws; start a fresh run"]


def _foreign(path: Path) -> None:
    torch.save({"model": {"weight": torch.zeros(2)}}, path)


def _other_format(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format": 99}, path)


def _missing_key(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    del payload["optimizer"]
    torch.save(payload, path)


DAMAGE = {
    "empty": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(os.urandom(4096)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "zeroed tail": lambda p: p.write_bytes(p.read_bytes()[:-4096] + bytes(4096)),
    "text": lambda p: p.write_text("model: cnn\n"),
    "a directory": lambda p: (p.unlink(), p.mkdir()),
    "foreign torch file": _foreign,
    "other format": _other_format,
    "missing optimizer": _missing_key,
}


def test_checkpoint_is_loaded_as_data_never_as_code(run_dir, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**payload, "extra": _OpensAFile(marker)}, run_dir / "checkpoint.pt")
    # the file really would run code if loaded with pickle's full power ...
    torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()
    # ... and the trainer refuses it without running anything
    code, out, err = run_main([*ARGS, "--epochs", "2", "--resume", str(run_dir)], capsys)
    assert code == 2
    [line] = error_lines(err)
    assert line.startswith(f"error: cannot read checkpoint {run_dir / 'checkpoint.pt'} "
                           f"(UnpicklingError: Weights only load failed")
    assert not marker.exists()


# Runs in a child process: write an old version, then start writing a new one and die by
# SIGKILL half-way through the write, as a node that loses power does.
CRASH_SCRIPT = r"""
import io, os, signal, sys
from pathlib import Path
import torch
from mnist_hpc import files
from mnist_hpc.run import checkpoint, rundir

how, folder = sys.argv[1], Path(sys.argv[2])

def naive_write(path, data):
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as handle:
        handle.write(data)

def write(version):
    payload = {"version": version, "blob": torch.full((200_000,), float(version))}
    if how == "checkpoint":
        checkpoint.save(folder, payload)
        return
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    (rundir.atomic_write if how == "atomic" else naive_write)(
        folder / rundir.CHECKPOINT, buffer.getvalue())

write(1)

class DiesHalfway(io.RawIOBase):
    def __init__(self, handle):
        self.handle = handle
    def write(self, data):
        self.handle.write(bytes(data)[: len(data) // 2])
        self.handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    def __getattr__(self, name):
        return getattr(self.handle, name)

real_fdopen = os.fdopen
os.fdopen = lambda *a, **k: DiesHalfway(real_fdopen(*a, **k))
write(2)
"""


def crash_mid_write(how: str, folder: Path) -> Path:
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, how, str(folder)], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # it really died mid-write
    return folder / rundir.CHECKPOINT


class _OpensAFile:
    """Unpickling this creates ``path``: the harmless stand-in for arbitrary code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_auto_without_run_id_says_how_to_name_the_run(capsys):
    code, out, err = run_main([*ARGS, "--resume", "auto"], capsys)
    assert code == 2
    assert error_lines(err) == ["error: --resume auto needs --run-id (the name the job reuses "
                                "when it is requeued), e.g. --run-id slurm-$SLURM_JOB_ID"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_or_foreign_checkpoint_is_a_usage_error(run_dir, capsys, damage):
    DAMAGE[damage](run_dir / "checkpoint.pt")
    code, out, err = run_main([*ARGS, "--epochs", "2", "--resume", str(run_dir)], capsys)
    assert code == 2, err
    [line] = error_lines(err)
    assert re.match(r"error: (cannot read checkpoint \S+checkpoint\.pt \(|\S+checkpoint\.pt is "
                    rf"not a mnist_hpc checkpoint of format {checkpoint.FORMAT}; start a fresh "
                    r"run$|--resume \S+: no checkpoint\.pt in )", line), line
    assert "Traceback" not in err
