"""What seeing inside a run costs: the same steps trained plain and with the trainer's
instruments (per-rank timing, the loss tap, a steps.jsonl line every 50 steps, the activity
for error lines), both built from the default recipe as a run builds them.

Repeats alternate the two, so drifting machine load hits them alike; the ratio is the median
instrumented time over the median plain time (1.03 would be 3 % overhead).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from ..config.options import RunConfig
from ..data import dataset
from ..data.batches import BatchPlan, repeated_batches
from ..job.layout import DistEnv
from ..observe.observer import EpochHooks, Observer
from ..step import engine
from ..step.recipe import build
from .settings import SEED, Settings

LOG_EVERY = 50
STEPS = 2 * LOG_EVERY


def _runner(settings: Settings, split: dataset.Split, observed: bool,
            run_dir: Path) -> tuple[Callable[[], float], Optional[Observer]]:
    config = RunConfig(seed=SEED, log_every=LOG_EVERY if observed else None)
    device = settings.device
    recipe = build(config, device, STEPS)
    plan = BatchPlan(len(split), config.batch_size, seed=SEED, shuffle=False,
                     channels_last=config.channels_last)
    repeated_batches(split, plan)  # refuses a split smaller than one batch, before timing
    observer = (Observer(config, DistEnv(), device, run_dir, recipe, None,
                         dataset.to_input(split.images[:2])) if observed else None)

    def run() -> float:
        batches = itertools.islice(repeated_batches(split, plan), STEPS)
        hooks = EpochHooks(batches, recipe.loss_fn, lambda step: False, lambda step: None)
        if observer is not None:
            hooks = observer.wrap(0, 0, STEPS, hooks)
        engine.synchronize(device)
        started = time.perf_counter()
        engine.train_one_epoch(recipe.model, hooks.batches, recipe.optimizer, hooks.loss_fn, 1,
                               recipe.precision, recipe.scheduler, hooks.should_stop,
                               hooks.on_step)
        if observer is not None:
            observer.trained()
        engine.synchronize(device)
        return time.perf_counter() - started

    return run, observer


def bench_overhead(splits: dataset.MNISTSplits, settings: Settings,
                   log: Callable[[str], None]) -> dict:
    """Seconds for STEPS steps of the default recipe, plain and observed; their ratio."""
    split = splits.train.to(settings.device)
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"plain": _runner(settings, split, False, Path(tmp))[0]}
        runners["observed"], observer = _runner(settings, split, True, Path(tmp))
        for run in runners.values():  # warm-up: first-step allocations and kernel choice
            run()
        times: dict = {name: [] for name in runners}
        for repeat in range(settings.repeats):
            for name, run in runners.items():
                times[name].append(run())
                log(f"  repeat {repeat + 1}/{settings.repeats} {name}: {times[name][-1]:.2f} s")
        observer.close()
        lines = (Path(tmp) / "steps.jsonl").read_text().count("\n")
    plain, observed = (statistics.median(times[n]) for n in ("plain", "observed"))
    return {"steps": STEPS, "log_every": LOG_EVERY, "batch_size": RunConfig().batch_size,
            "plain_s": times["plain"], "observed_s": times["observed"],
            "step_log_lines": lines, "ratio": observed / plain}
