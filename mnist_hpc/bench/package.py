"""A preset's run as train runs it, on one process, evaluated as it goes and timed."""

from __future__ import annotations

import itertools
import math
import time
from typing import Optional

import torch

from ..config.flags import parse_args
from ..config.options import RunConfig, replace
from ..data import dataset
from ..data.batches import BatchPlan, epoch_batches
from ..job.layout import DistEnv
from ..step import engine, graphs, recipe
from .settings import Settings


def preset(name: str, settings: Settings, epochs: Optional[int] = None) -> RunConfig:
    """A preset's RunConfig as train would resolve it, with the bench's overrides."""
    changes: dict = {"limit": settings.limit, "device": settings.device.type}
    if epochs is not None:
        changes["epochs"] = epochs
    if settings.eval_batch_size is not None:
        changes["eval_batch_size"] = settings.eval_batch_size
    return replace(parse_args(["--config", name, "--data-dir", settings.data_dir]), **changes)


def run_recipe(config: RunConfig, device: torch.device, train_split: dataset.Split,
               evaluations: list[tuple[str, dataset.Split]], evals_per_epoch: int,
               targets: tuple[float, ...] = (), target_split: str = "test") -> dict:
    """Train ``config`` as train does (``recipe.build``: the same seeds, model, optimizer,
    schedule, precision and loss; the same batches) on one process, evaluating
    ``evaluations`` ``evals_per_epoch`` times per epoch.

    Training and evaluation are timed apart, each between synchronisations; the first time
    ``target_split`` accuracy reaches each target, the clocks so far are recorded. Where train
    would capture CUDA graphs, so does this, inside the first training clock.
    """
    env = DistEnv(device=str(device))
    plan = BatchPlan(len(train_split), config.batch_size, seed=config.seed,
                     split_seed=config.split_seed, shuffle=config.shuffle,
                     augment=config.augment, normalize=config.normalize,
                     channels_last=config.channels_last)
    n_steps = plan.steps_per_epoch
    graphed = graphs.use_graphs(config.cuda_graphs, device.type, config.optimizer, 1, None,
                                config.compile)
    run = recipe.build(config, device, n_steps, graphs=graphed)
    step = (graphs.GraphedStep(run.model, run.optimizer, run.loss_fn, 1, run.precision, device)
            if graphed else None)
    chunk = math.ceil(n_steps / evals_per_epoch)
    train_s = eval_s = 0.0
    samples = steps_done = 0
    evals: list[dict] = []
    reached: dict = {f"{t:g}": None for t in targets}
    for epoch in range(config.epochs):
        batches = epoch_batches(train_split, plan, epoch)
        for first in range(0, n_steps, chunk):
            engine.synchronize(device)
            t0 = time.perf_counter()
            result = engine.train_one_epoch(run.model, itertools.islice(batches, chunk),
                                            run.optimizer, run.loss_fn, 1, run.precision,
                                            run.scheduler, graphed=step)
            engine.synchronize(device)
            t1 = time.perf_counter()
            train_s += t1 - t0
            samples += result.samples
            steps_done += result.steps
            record: dict = {"epoch": epoch + (first + result.steps) / n_steps,
                            "step": steps_done}
            for name, split in evaluations:
                found = engine.evaluate(run.raw_model, split, range(len(split)), env,
                                        run.precision, config.eval_batch_for(device.type))
                record[name] = {"acc": found.accuracy, "loss": found.loss, "count": found.count}
            engine.synchronize(device)
            eval_s += time.perf_counter() - t1
            record.update(train_s=train_s, eval_s=eval_s)
            evals.append(record)
            if target_split in record:
                for target in targets:
                    key = f"{target:g}"
                    if reached[key] is None and record[target_split]["acc"] >= target:
                        reached[key] = {"train_s": train_s, "eval_s": eval_s,
                                        "wall_s": train_s + eval_s, "step": steps_done,
                                        "epoch": record["epoch"],
                                        "test_acc": record[target_split]["acc"]}
    return {"train_s": train_s, "eval_s": eval_s, "samples": samples, "steps": steps_done,
            "evals": evals, "reached": reached, "precision": run.precision,
            "cuda_graphs": graphed}
