"""The seed recipe's whole run (its epochs, each followed by the notebook's evaluations of the
train and validation splits): the notebook's loop against ``train --config seed``."""

from __future__ import annotations

import time
from typing import Callable

from ..config.flags import parse_args
from ..data import dataset
from ..step import engine
from . import notebook
from .package import preset, run_recipe
from .settings import Settings


def package_epochs(settings: Settings, epochs: int) -> dict:
    """``python -m mnist_hpc.train --config seed`` in-process, minus the run directory: data
    loaded (its time included in the wall), each epoch trained, then train and validation
    evaluated as the notebook does."""
    device = settings.device
    config = preset("seed", settings, epochs=epochs)
    engine.synchronize(device)
    start = time.perf_counter()
    splits = dataset.load_splits(config.data_dir, config.split_seed, config.limit)
    train_split, val_split = splits.train.to(device), splits.val.to(device)
    engine.synchronize(device)
    data_load_s = time.perf_counter() - start
    result = run_recipe(config, device, train_split, evaluations=[("train", train_split),
                                                                  ("val", val_split)],
                        evals_per_epoch=1)
    history = [[r["train"]["acc"], r["train"]["loss"], r["val"]["acc"], r["val"]["loss"]]
               for r in result["evals"]]
    return {"wall_s": time.perf_counter() - start, "data_load_s": data_load_s,
            "train_s": result["train_s"], "eval_s": result["eval_s"],
            "train_samples_per_s": result["samples"] / result["train_s"], "history": history,
            "cuda_graphs": result["cuda_graphs"],
            "config": {k: config.to_dict()[k] for k in ("model", "precision", "channels_last",
                                                        "eval_batch_size", "compile")}}


def bench_epochs(settings: Settings, log: Callable[[str], None]) -> dict:
    """Both whole runs and their ratios: wall time, training speed, accuracy agreement."""
    epochs = settings.epochs or parse_args(["--config", "seed"]).epochs
    log(f"  notebook, {epochs} epochs ...")
    nb = notebook.train_network(settings.data_dir, settings.limit, settings.device, epochs)
    log(f"  notebook: {nb['wall_s']:.1f} s; package --config seed, {epochs} epochs ...")
    package = package_epochs(settings, epochs)
    log(f"  package: {package['wall_s']:.1f} s")
    # accuracies only: the notebook's loss is a mean of batch means, the package's a mean over
    # samples, and the two differ whenever the last batch is short
    diff = max(abs(ra[i] - rb[i]) for ra, rb in zip(nb["history"], package["history"])
               for i in (0, 2))
    return {"epochs": epochs, "notebook": nb, "package": package,
            "wall_ratio": package["wall_s"] / nb["wall_s"],
            "train_speedup": package["train_samples_per_s"] / nb["train_samples_per_s"],
            "accuracy_max_abs_diff": diff}
