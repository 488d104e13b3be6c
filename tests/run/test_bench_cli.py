"""The benchmark's command line: a quick run writes its JSON and table (the throughput,
epochs and time-to-accuracy measurements and the machine they ran on); bad input exits 2.
No timing asserts: figures on a shared CI machine say nothing; only their presence and sign
are checked. The notebook's loop and the package's run: test_bench_notebook.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, clean_env

from mnist_hpc import bench
from mnist_hpc.bench import allocator


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "nested" / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "mnist_hpc.bench", "--quick", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env=clean_env())
    return proc, out


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_quick_json_records_the_machine(quick_run):
    report = json.loads(quick_run[1].read_text())
    assert report["schema"] == 1 and report["quick"] is True
    machine = report["machine"]
    for key in ("cpu_model", "cpu_count", "torch_threads", "device", "gpu_name", "torch",
                "torchvision", "python", "loadavg_start", "loadavg_end"):
        assert key in machine
    assert machine["device"] == "cpu" and machine["gpu_name"] is None
    assert machine["torch"] == torch.__version__
    assert _positive(machine["cpu_count"])


def test_quick_json_has_positive_throughputs_and_ratios(quick_run):
    report = json.loads(quick_run[1].read_text())
    throughput = report["throughput"]
    assert list(throughput) == ["notebook", "loader", "device", "torch_dropout", "device_cl",
                                "bf16_cl"]
    for name, row in throughput.items():
        assert "error" not in row, (name, row)
        rate = row["samples_per_s"]
        assert all(_positive(rate[k]) for k in ("median", "min", "max"))
        assert rate["min"] <= rate["median"] <= rate["max"]
        assert len(rate["all"]) == report["settings"]["repeats"]
        assert _positive(row["ratio_to_notebook"]) and _positive(row["warmup_s"])
    assert throughput["notebook"]["ratio_to_notebook"] == pytest.approx(1.0)


def test_quick_json_compares_the_whole_seed_run(quick_run):
    epochs = json.loads(quick_run[1].read_text())["epochs"]
    for side in ("notebook", "package"):
        row = epochs[side]
        assert all(_positive(row[k]) for k in ("wall_s", "train_s", "eval_s",
                                                "train_samples_per_s"))
        assert len(row["history"]) == epochs["epochs"]
        assert all(len(r) == 4 for r in row["history"])
    assert _positive(epochs["wall_ratio"]) and _positive(epochs["train_speedup"])
    assert epochs["accuracy_max_abs_diff"] >= 0


def test_quick_json_times_accuracy_for_both_presets(quick_run):
    tta = json.loads(quick_run[1].read_text())["time_to_accuracy"]
    assert set(tta) == {"default", "fast"}
    assert tta["fast"]["precision"] == "bf16"
    for row in tta.values():
        assert _positive(row["train_s"]) and _positive(row["eval_s"])
        assert 0 <= row["final_test_acc"] <= 100
        assert set(row["reached"]) == {"98", "99"}
        for hit in row["reached"].values():  # tiny subsets: may or may not get there
            assert hit is None or (_positive(hit["train_s"]) and hit["test_acc"] >= 98)
        assert row["curve"] and all(_positive(p["train_s"]) for p in row["curve"])


def test_quick_json_races_the_published_recipe(quick_run):
    race = json.loads(quick_run[1].read_text())["race"]
    (row,) = race["seeds"]  # one seed when quick
    for side in ("published", "ours", "command"):
        assert _positive(row[side]["train_s"]) and 0 <= row[side]["test_acc"] <= 100
    assert _positive(row["published"]["in_process_s"]) and _positive(row["command"]["wall_s"])
    assert race["train_ratio"] == pytest.approx(row["ours"]["train_s"]
                                                / row["published"]["train_s"])
    assert race["command_ratio"] == pytest.approx(row["command"]["wall_s"]
                                                  / row["published"]["in_process_s"])
    # the same network and recipe in-process and as the command: the same accuracy
    assert row["ours"]["test_acc"] == pytest.approx(row["command"]["test_acc"], abs=0.01)


def test_quick_run_succeeds_and_prints_the_table(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr
    assert "Training throughput" in proc.stdout
    assert "Seed recipe" in proc.stdout
    assert "Time to test accuracy" in proc.stdout
    assert "against the fastest published recipe" in proc.stdout
    assert f"Wrote {out}" in proc.stdout


def test_unknown_case_exits_2_with_the_valid_names(tmp_path, capsys):
    assert bench.main(["--only", "nope", "--out", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err
    assert "unknown name 'nope'" in err and "notebook" in err
    assert not (tmp_path / "b.json").exists()


def test_the_allocator_case_alternates_the_thresholds_and_glibcs_own(monkeypatch):
    """Each run sees the environment's thresholds or none of them, in turn; the ratios are of
    the medians of each side's processes."""
    seen = []

    def run_train(args, env):  # a real process, so that the children's CPU time grows
        seen.append((env.get("MALLOC_MMAP_THRESHOLD_"), env.get("MALLOC_TRIM_THRESHOLD_")))
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return 1.0

    monkeypatch.setattr(allocator, "run_train", run_train)
    environ = {**clean_env(), "MALLOC_MMAP_THRESHOLD_": "1048576"}
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    row = allocator.compare(["--epochs", "1"], 2, environ)
    assert seen == [(None, None), ("1048576", None)] * 2
    assert row["thresholds"] == {"MALLOC_MMAP_THRESHOLD_": "1048576"}
    for side in ("glibc", "raised"):
        assert len(row[side]["cpu_s_all"]) == 2 and row[side]["cpu_s"] > 0
    assert row["cpu_ratio"] == pytest.approx(row["raised"]["cpu_s"] / row["glibc"]["cpu_s"])


def test_the_allocator_case_times_the_trainer_command(tmp_path):
    """``--only allocator`` as a user runs it: whole trainer processes, both ways."""
    out = tmp_path / "bench.json"
    env = clean_env(MALLOC_MMAP_THRESHOLD_="268435456", MALLOC_TRIM_THRESHOLD_="268435456")
    proc = subprocess.run([sys.executable, "-m", "mnist_hpc.bench", "--only", "allocator",
                           "--quick", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text())["allocator"]
    assert row["repeats"] == 1 and set(row["thresholds"]) == set(allocator.THRESHOLDS)
    assert _positive(row["cpu_ratio"]) and _positive(row["wall_ratio"])
    assert "Whole CPU trainer runs, 1 each, alternating" in proc.stdout


def test_the_allocator_case_without_thresholds_exits_2(tmp_path, monkeypatch, capsys):
    for name in allocator.THRESHOLDS:
        monkeypatch.delenv(name, raising=False)
    assert bench.main(["--only", "allocator", "--out", str(tmp_path / "b.json")]) == 2
    assert "set MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()
