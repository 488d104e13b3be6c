"""Time to accuracy: a preset run as train runs it, the test split evaluated as training goes;
the training clock (first step to the last synchronised step) when each target is first met,
with the time spent evaluating beside it."""

from __future__ import annotations

import time
from typing import Callable

from ..data import dataset
from ..step import engine
from .package import preset, run_recipe
from .settings import Settings


def bench_time_to_accuracy(name: str, settings: Settings, log: Callable[[str], None]) -> dict:
    device = settings.device
    config = preset(name, settings, epochs=settings.epochs)
    t0 = time.perf_counter()
    splits = dataset.load_splits(config.data_dir, config.split_seed, config.limit)
    train_split, test_split = splits.train.to(device), splits.test.to(device)
    engine.synchronize(device)
    data_load_s = time.perf_counter() - t0
    log(f"  {name}: {config.epochs} epochs, test evaluated {settings.evals_per_epoch}x "
        f"per epoch ...")
    result = run_recipe(config, device, train_split, [("test", test_split)],
                        settings.evals_per_epoch, settings.targets)
    final = result["evals"][-1]["test"]
    log(f"  {name}: test {final['acc']:.2f} % after {result['train_s']:.1f} s training "
        f"+ {result['eval_s']:.1f} s evaluating")
    return {"config": {k: v for k, v in config.to_dict().items()
                       if k not in ("data_dir", "results_dir")},
            "precision": "bf16" if result["precision"].dtype else "fp32",
            "cuda_graphs": result["cuda_graphs"],
            "data_load_s": data_load_s,
            "train_s": result["train_s"], "eval_s": result["eval_s"],
            "train_samples_per_s": result["samples"] / result["train_s"],
            "final_test_acc": final["acc"], "final_test_loss": final["loss"],
            "reached": result["reached"],
            "curve": [{"epoch": r["epoch"], "step": r["step"], "test_acc": r["test"]["acc"],
                       "train_s": r["train_s"], "eval_s": r["eval_s"]} for r in result["evals"]]}
