"""The entry point: --help and bad input answered without torch; end to end on one process,
every file of the run directory, from any working directory."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import (REPO, clean_env, error_lines, only_run_dir, read_metrics, run_trainer,
                      train_in_this_process)


def imported_modules(args: list[str], tmp_path, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                      set[str]]:
    """``python -X importtime -m mnist_hpc.train ARGS``: its result and every module it
    imported (importtime lists each on stderr, indented by nesting)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "mnist_hpc.train", *args,
                             "--results-dir", str(tmp_path / "results")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env=clean_env(**env))
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "mnist_hpc.train" in modules or "mnist_hpc.config.options" in modules, (
        result.stderr[-2000:])
    return result, modules


def test_help_does_not_import_torch(tmp_path):
    result, modules = imported_modules(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m mnist_hpc.train" in result.stdout and "--lr LR" in result.stdout
    assert "torch" not in modules, sorted(m for m in modules if m.startswith("torch"))


@pytest.mark.parametrize("command", ["mnist_hpc.train", "mnist_hpc.doctor", "mnist_hpc.scaling",
                                     "mnist_hpc.bench"])
def test_version_does_not_import_torch(command):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", command, "--version"],
                            capture_output=True, text=True, timeout=120, env=clean_env())
    from mnist_hpc import __version__

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == f"mnist_hpc {__version__}\n"
    assert not re.search(r"\| +torch$", result.stderr, re.MULTILINE)


def test_the_training_modules_load_without_torchs_compiler():
    """Importing torch._dynamo costs a process about 1 s (a 2-core CPU); a trainer pays it
    anyway (torch.optim's optimizers import it), but the doctor, evaluate and the test workers
    need not."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import mnist_hpc.run.loop"],
                            capture_output=True, text=True, timeout=120, env=clean_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"\| +torch$", result.stderr, re.MULTILINE)  # the check reads the list
    assert not re.search(r"\| +torch\._dynamo$", result.stderr, re.MULTILINE)


def test_print_config_resolves_every_auto_and_trains_nothing(tmp_path):
    result, _ = imported_modules(["--print-config", "--config", "resnet"], tmp_path,
                                 CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("# the resolved config")
    assert "# batch per rank: 256 (global batch 256 over 1 rank)" in result.stdout
    config = yaml.safe_load(result.stdout)
    assert "auto" not in config.values(), config
    assert (config["device"], config["backend"], config["cuda_graphs"]) == ("cpu", "gloo", "off")
    assert config["precision"] == "bf16"  # the resnet preset's own, on any device
    assert not (tmp_path / "results").exists()


def test_the_recorded_config_reproduces_the_run_elsewhere(tmp_path):
    """config.yaml keeps relative paths relative and every auto resolved: given back as
    --config from another directory (under another run id) it trains the same numbers, and
    keeps its --no-plots (both runs draw nothing; test_run_directory_holds_every_file: the
    plots a run draws by default)."""
    data = REPO / "data"
    first, second = tmp_path / "first", tmp_path / "second"
    for cwd in (first, second):
        cwd.mkdir()
        (cwd / "data").symlink_to(data)
    with pytest.MonkeyPatch.context() as patch:  # two runs in this process, torch loaded
        patch.chdir(first)
        code, out, err = train_in_this_process(["--limit", "300", "--epochs", "1", "--data-dir",
                                                "data", "--results-dir", "results",
                                                "--no-plots"])
        assert code == 0, out + err
        patch.chdir(second)
        run_dir = only_run_dir(first / "results")
        code, out, err = train_in_this_process(["--config", str(run_dir / "config.yaml"),
                                                "--run-id", "again"])
        assert code == 0, out + err
    text = (run_dir / "config.yaml").read_text()
    recorded = yaml.safe_load(text)
    assert "auto" not in recorded.values(), recorded
    assert (recorded["data_dir"], recorded["results_dir"]) == ("data", "results")
    assert (recorded["run_id"], recorded["device"], recorded["precision"]) == (
        run_dir.name, "cpu", "fp32")
    assert "# batch per rank: 512 (global batch 512 over 1 rank)" in text
    assert read_metrics(run_dir)["config"] == recorded
    assert np.array_equal(np.load(run_dir / "history.npy"),
                          np.load(second / "results" / "again" / "history.npy"))
    assert recorded["plots"] is False
    assert list(tmp_path.rglob("*.png")) == [], "--no-plots drew"


BAD_INPUT = {
    "negative lr": (["--lr", "-1"], {}, r"^error: lr must be > 0, got -1.0$"),
    "unknown flag": (["--no-such-flag"], {}, r"^error: unrecognized arguments: --no-such-flag"),
    "bad YAML": (["--config", "{tmp}/bad.yaml"], {}, r"^error: YAML syntax error in .*bad.yaml"),
    "torchrun without a local rank": ([], {"RANK": "0", "WORLD_SIZE": "2"},
                          r"^error: torchrun gives rank 0 of 2 but no local rank"),
    "no rendezvous address": ([], {"SLURM_STEP_ID": "0", "SLURM_PROCID": "0",
                                   "SLURM_NTASKS": "2", "SLURM_LOCALID": "0"},
                              r"^error: slurm started 2 ranks but gave no rendezvous address"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_exits_2_without_importing_torch(case, tmp_path):
    args, env, pattern = BAD_INPUT[case]
    (tmp_path / "bad.yaml").write_text("lr: [0.1\n")
    result, modules = imported_modules([a.format(tmp=tmp_path) for a in args], tmp_path, **env)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = error_lines(result.stderr)
    assert re.search(pattern, line), line
    assert "torch" not in modules, sorted(m for m in modules if m.startswith("torch"))
    assert not (tmp_path / "results").exists()


def test_an_error_found_only_with_torch_is_still_one_line(tmp_path):
    """The check above can fail: an input that needs torch to be judged (no CUDA device on
    this machine, or none used by it) does import it, and still exits 2 with one line."""
    result, modules = imported_modules(["--device", "cuda", "--limit", "64"], tmp_path,
                                       CUDA_VISIBLE_DEVICES="")
    assert "torch" in modules
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        "error: --device cuda but no CUDA device is visible; use --device cpu or check "
        "CUDA_VISIBLE_DEVICES"]


def test_cuda_graphs_on_without_a_gpu_is_refused_with_one_line(tmp_path):
    """--device auto finds no GPU here: the refusal comes once torch has looked, before any
    run directory is made."""
    result, _ = imported_modules(["--cuda-graphs", "on", "--limit", "64"], tmp_path,
                                 CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2, result.stderr[-2000:]
    assert error_lines(result.stderr) == [
        "error: CUDA graphs need --device cuda; use --cuda-graphs auto or off"]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("device, code", [("auto", 2), ("cpu", 0)])
def test_gpus_torch_cannot_see_stop_auto_but_not_cpu(device, code, tmp_path):
    """A job given a GPU (here only its scheduler's variable: this machine has none) whose torch
    sees none does not train on the CPU silently: --device auto exits 2 naming what was
    given, what torch sees and the fix; --device cpu trains."""
    result, _ = imported_modules(["--device", device, "--limit", "64", "--epochs", "1"],
                                 tmp_path, CUDA_VISIBLE_DEVICES="0")
    assert result.returncode == code, result.stderr[-2000:]
    if code == 2:
        assert [re.sub(r"torch \S+ \([^)]*\)", "torch V (B)", line)
                for line in error_lines(result.stderr)] == [
            "error: --device auto: this process was given GPUs (CUDA_VISIBLE_DEVICES=0) but "
            "torch V (B) sees none; install a torch build for these GPUs and their driver "
            "(nvidia-smi shows the driver's CUDA version), or pass --device cpu to train on "
            "the CPU anyway"]
        assert not (tmp_path / "results").exists()


def test_deterministic_runs_repeat_exactly_and_say_so(tmp_path):
    """Two runs in this process (torch loaded once); the process-wide switch is put back
    after them, as the next run's recipe would."""
    import torch

    histories = []
    try:
        for name in ("first", "second"):
            results = tmp_path / name
            code, out, err = train_in_this_process(["--limit", "300", "--epochs", "1",
                                                    "--deterministic", "--no-plots",
                                                    "--results-dir", str(results)])
            assert code == 0, out + err
            run_dir = only_run_dir(results)
            assert read_metrics(run_dir)["config"]["deterministic"] is True
            histories.append(np.load(run_dir / "history.npy"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert np.array_equal(histories[0], histories[1])


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One short real run with --limit, started from an unrelated working directory."""
    elsewhere = tmp_path_factory.mktemp("cwd")
    results_dir = tmp_path_factory.mktemp("results")
    result = run_trainer(["--limit", "600", "--epochs", "2", "--results-dir", str(results_dir)],
                         cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, only_run_dir(results_dir)


def test_prints_the_notebooks_epoch_lines_and_the_run_directory(smoke_run):
    result, run_dir = smoke_run
    lines = result.stdout.splitlines()
    assert sum(line.startswith("Epoch 0: val. loss: ") for line in lines) == 1
    assert "val. accuracy: " in next(l for l in lines if l.startswith("Epoch 1:"))
    assert f"Run directory: {run_dir}" in lines
    assert "\r" not in result.stdout  # no progress bar when stdout is not a terminal
    # what a batch log needs: the progress, and the run on one screen where it ends
    assert re.search(r"^Epoch 0: .*; epoch 1/2, train loss [\d.]+, [\d,]+ samples/s \(train "
                     r"[\d.]+ s, eval [\d.]+ s\), ETA \d:\d\d:\d\d; ", result.stdout, re.M)
    summary = lines[lines.index(f"Summary of run {run_dir.name} (cnn, 1 rank(s), cpu):"):]
    assert [line.split()[0] for line in summary[1:]] == [
        "validation", "test", "wall", "outside", "mean", "model", "Run"]
    assert summary[-2:] == [
        f"  model                {run_dir / 'model.pt'} (python -m mnist_hpc.evaluate "
        f"{run_dir} --limit 600)", f"Run directory: {run_dir}"]


def test_run_directory_holds_every_file(smoke_run):
    _, run_dir = smoke_run
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "history.npy", "history.csv", "metrics.json", "loss.png",
            "accuracy.png", "checkpoint.pt", "model.pt"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    for plot in ("loss.png", "accuracy.png"):
        assert (run_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["limit"] == 600 and config["epochs"] == 2 and config["model"] == "cnn"


def test_history_has_the_notebooks_shape_and_ranges(smoke_run):
    _, run_dir = smoke_run
    history = np.load(run_dir / "history.npy")
    assert history.dtype == np.float64 and history.shape == (2, 4)
    assert ((history[:, [0, 2]] >= 0) & (history[:, [0, 2]] <= 100)).all()
    assert (history[:, [1, 3]] > 0).all()
    csv = np.loadtxt(run_dir / "history.csv", delimiter=",", skiprows=1)
    assert np.allclose(csv[:, 1:], history)


def test_metrics_json_records_the_run(smoke_run):
    _, run_dir = smoke_run
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["run_id"] == run_dir.name
    assert metrics["samples"] == {"train": 600, "val": 600, "test": 600}
    assert metrics["world"]["world_size"] == 1 and metrics["world"]["launcher"] == "single"
    # training FLOPs: forward + backward (the backward counts no input gradient for conv1)
    assert metrics["model"] == {"name": "cnn", "parameters": 1_199_882,
                                "flops_per_sample": 71_565_312}
    assert len(metrics["epochs"]) == 2
    for epoch in metrics["epochs"]:
        assert epoch["train_s"] > 0 and epoch["eval_s"] > 0 and epoch["train_samples"] == 600
        assert epoch["train_samples_per_s"] == pytest.approx(600 / epoch["train_s"])
    history = np.load(run_dir / "history.npy")
    assert metrics["epochs"][-1]["val_acc"] == history[-1, 2]
    final = metrics["final"]
    assert 0 <= final["test_acc"] <= 100 and final["wall_s"] > final["train_s"] > 0
    assert final["data_load_s"] > 0
    # a CPU run has no one-time GPU work to warm up; startup_s counts from the process start
    assert final["warmup_s"] == 0.0 and 0 < final["startup_s"]
    assert metrics["batch"]["cuda_graphs"] is False and metrics["batch"]["precision"] == "fp32"
    versions = metrics["versions"]
    assert versions["torch"] and versions["python"] and versions["hostname"]
    json.dumps(metrics)


def test_metrics_json_says_where_the_process_spent_its_time(smoke_run):
    """What the command spends outside training, each part measured on its own clock: the
    parts and the training are disjoint, so together they fit in the process's time."""
    result, run_dir = smoke_run
    metrics = read_metrics(run_dir)
    final = metrics["final"]
    parts = [final[key] for key in ("imports_s", "init_process_group_s", "data_load_s",
                                    "warmup_s", "eval_s", "write_s")]
    assert final["imports_s"] > 0 and final["write_s"] > 0 and min(parts) >= 0
    assert final["eval_s"] > sum(epoch["eval_s"] for epoch in metrics["epochs"])  # + test
    assert final["train_s"] + sum(parts) <= final["process_s"] + 0.02  # /proc's 10 ms ticks
    assert final["process_s"] >= final["startup_s"]
    assert all(epoch["train_figures"] == "eval" for epoch in metrics["epochs"])
    assert re.search(r"^  outside training     [\d.]+ s of the process's [\d.]+ s: start-up "
                     r"and imports [\d.]+, .*evaluation [\d.]+, writing results [\d.]+",
                     result.stdout, re.M)


def test_train_metrics_pass_sums_the_training_pass_instead_of_a_second_one(tmp_path):
    """--train-metrics pass: the history's train figures are what the training pass saw
    (every trained sample counted once), named so in metrics.json."""
    result = run_trainer(["--config", "fast", "--limit", "700", "--epochs", "2",
                          "--results-dir", str(tmp_path)])
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = read_metrics(only_run_dir(tmp_path))
    assert metrics["model"]["name"] == "small" and metrics["batch"]["precision"] == "bf16"
    assert [e["train_figures"] for e in metrics["epochs"]] == ["pass", "pass"]
    assert metrics["samples"]["train"] == 700 == metrics["epochs"][-1]["train_samples"]
    for epoch in metrics["epochs"]:
        assert 0 < epoch["train_acc"] < 100 and epoch["train_loss"] > 0
        assert epoch["train_acc"] * 7 == pytest.approx(round(epoch["train_acc"] * 7))  # /700
