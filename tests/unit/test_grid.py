"""Job-array grids (``python -m mnist_hpc.grid``): the points in array order, each point's
trainer flags as the templates read them, bad grids refused with the fix, and the summary's
mean and spread per point over run directories written by metrics.json's own writer."""

from __future__ import annotations

import statistics

import pytest
from scaling_helpers import metrics_record

from mnist_hpc import grid
from mnist_hpc.config.flags import parse_args
from mnist_hpc.errors import EXIT_USAGE, UsageError
from mnist_hpc.files import PACKAGE_DIR
from mnist_hpc.run import metrics_json


def write_grid(tmp_path, text):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_points_are_every_combination_the_last_key_fastest(tmp_path):
    loaded = grid.load(write_grid(tmp_path, "grid:\n  lr: [0.01, 0.003]\n  seed: [1, 2, 3]\n"
                                            "  shuffle: [false]\n"))
    assert len(loaded.points) == 6
    assert loaded.flags(0) == ["--lr", "0.01", "--seed", "1", "--no-shuffle"]
    assert loaded.flags(4) == ["--lr", "0.003", "--seed", "2", "--no-shuffle"]
    # what the trainer makes of a point's flags is the point
    config = parse_args(loaded.flags(5))
    assert (config.lr, config.seed, config.shuffle) == (0.003, 3, False)


def test_the_shipped_grids_load():
    for path in sorted((PACKAGE_DIR / "grids").glob("*.yaml")):
        assert grid.load(path).points, path


@pytest.mark.parametrize("text, says", [
    ("grid:\n  lrr: [0.1]\n", "unknown key 'lrr' in grid file"),
    ("grid:\n  lr: [fast]\n", "lr must be float"),
    ("grid:\n  lr: 0.1\n", "lr must be a list of one or more plain values"),
    ("grid:\n  lr: []\n", "lr must be a list of one or more plain values"),
    ("seeds: [1, 2]\n", "must hold 'grid:'"),
])
def test_a_bad_grid_is_refused_naming_the_key(tmp_path, text, says):
    with pytest.raises(UsageError, match=says):
        grid.load(write_grid(tmp_path, text))


def test_an_index_outside_the_grid_names_the_array_to_submit(tmp_path, capsys):
    path = write_grid(tmp_path, "grid:\n  seed: [1, 2, 3]\n")
    assert grid.main(["flags", str(path), "3"]) == EXIT_USAGE
    assert "submit --array=0-2 (PBS: -J 0-2)" in capsys.readouterr().err
    assert grid.main(["flags", str(path), "x"]) == EXIT_USAGE
    assert "invalid int value: 'x'" in capsys.readouterr().err
    assert grid.main(["flags", str(tmp_path / "none.yaml"), "0"]) == EXIT_USAGE
    assert "grid file" in capsys.readouterr().err
    assert grid.main(["flags", str(path), "1"]) == 0
    assert capsys.readouterr().out.split() == ["--seed", "2"]


def write_run(results, name, status, lr, seed, test_acc):
    record = metrics_record(name, status=status)
    record["config"] = {"lr": lr, "seed": seed}
    record["final"]["test_acc"] = test_acc
    if status != "completed":
        record["final"] = {}
    run_dir = results / name
    run_dir.mkdir(parents=True)
    metrics_json.write(run_dir, record, status, "rank 1: lost" if status == "failed" else None)
    return run_dir


def test_the_summary_pools_seeds_per_point_and_lists_what_it_left_out(tmp_path):
    path = write_grid(tmp_path, "grid:\n  lr: [0.01, 0.003]\n  seed: [1, 2, 3]\n")
    accs = [98.1, 98.4, 97.9]
    runs = [write_run(tmp_path / "r", f"a_{i}", "completed", 0.01, i + 1, acc)
            for i, acc in enumerate(accs)]
    runs.append(write_run(tmp_path / "r", "b_0", "completed", 0.003, 1, 97.0))
    runs.append(write_run(tmp_path / "r", "b_1", "failed", 0.003, 2, 0.0))
    runs.append(tmp_path / "r" / "missing")
    text = grid.summary(grid.load(path), runs)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:4]}
    assert rows["lr=0.01"][1:] == ["3/3", f"{statistics.mean(accs):.2f}",
                                   f"{statistics.stdev(accs):.2f}", "97.90", "98.40"]
    assert rows["lr=0.003"][1:] == ["1/3", "97.00", "–", "97.00", "97.00"]
    assert "not counted: b_1: failed rank 1: lost" in text, text
    assert "not counted: missing: unreadable" in text
