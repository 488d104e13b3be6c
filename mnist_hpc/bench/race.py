"""The ``fast`` preset against the fastest published recipe (``published``), seed by seed,
alternating, in one process on one machine: for each seed the published notebook's ``main``,
then the preset trained in-process as train trains it, then the whole ``python -m
mnist_hpc.train --config fast`` command in a fresh process (start-up, imports and writing
included). Each side's clock stops at the end of training (after a device synchronisation);
each side's test accuracy is on the full 10,000-image test split."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ..config.options import replace
from ..data import dataset
from ..data.mnist_files import load_raw
from ..run import metrics_json
from . import published
from .command import run_train
from .package import preset, run_recipe
from .settings import Settings

PRESET = "fast"


def ours(settings: Settings, seed: int, data: dataset.MNISTSplits) -> dict:
    """The preset trained in-process (``package.run_recipe``: train's recipe, seeds and
    batches), then the test split evaluated once."""
    config = replace(preset(PRESET, settings), seed=seed)
    device = settings.device
    result = run_recipe(config, device, data.train.to(device),
                        [("test", data.test.to(device))], evals_per_epoch=1)
    return {"train_s": result["train_s"], "test_acc": result["evals"][-1]["test"]["acc"]}


def whole_command(settings: Settings, seed: int) -> dict:
    """``python -m mnist_hpc.train --config fast --seed SEED`` from spawn to exit."""
    with tempfile.TemporaryDirectory(prefix="mnist_hpc-race-") as results:
        args = ["--config", PRESET, "--seed", str(seed), "--device", settings.device.type,
                "--data-dir", settings.data_dir, "--results-dir", results, "--run-id", "race"]
        if settings.limit is not None:
            args += ["--limit", str(settings.limit)]
        wall_s = run_train(args, dict(os.environ))
        metrics = metrics_json.read(Path(results) / "race")
    final = metrics["final"]
    return {"wall_s": wall_s, "train_s": final["train_s"], "test_acc": final["test_acc"],
            "outside_training_s": wall_s - final["train_s"]}


def bench_race(settings: Settings, seeds: int, log: Callable[[str], None]) -> dict:
    raw = load_raw(settings.data_dir)
    data = dataset.load_splits(settings.data_dir, limit=settings.limit)
    rows = []
    for seed in range(seeds):
        published.load(raw, settings.device, seed, settings.limit)
        torch.manual_seed(seed)  # the published network's initial weights
        published_acc, published_clocks = published.main()
        row = {"seed": seed, "published": {"test_acc": published_acc, **published_clocks},
               "ours": ours(settings, seed, data), "command": whole_command(settings, seed)}
        log(f"  seed {seed}: published {published_acc:.2f} % in "
            f"{published_clocks['train_s']:.2f} s; fast {row['ours']['test_acc']:.2f} % in "
            f"{row['ours']['train_s']:.2f} s; whole command {row['command']['wall_s']:.2f} s")
        rows.append(row)

    def median(side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in rows)

    return {"seeds": rows, "median": {
        "published_train_s": median("published", "train_s"),
        "published_in_process_s": median("published", "in_process_s"),
        "fast_train_s": median("ours", "train_s"),
        "command_wall_s": median("command", "wall_s")},
        "train_ratio": median("ours", "train_s") / median("published", "train_s"),
        "command_ratio": median("command", "wall_s") / median("published", "in_process_s"),
        "at_least_99": {side: sum(r[side]["test_acc"] >= 99.0 for r in rows)
                        for side in ("published", "ours", "command")}}
