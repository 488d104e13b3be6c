"""One training run's state and its side effects: the console lines, ``metrics.json``, the
history and plots, checkpoints, and the ranks' shared decision to stop.

Only rank 0 prints and writes; every collective here runs on every rank.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional

import numpy as np
import torch
from torch import nn

from ..config.options import RunConfig
from ..config.resolve import checkpoint_hash, recipe_hashes
from ..data import dataset
from ..data.batches import BatchPlan
from ..errors import Preempted
from ..job import process_group
from ..job.layout import DistEnv
from ..job.preemption import StopRequest
from ..observe.comm_timer import CommTimer
from ..observe.observer import Observer
from ..step import engine
from ..step.graphs import GraphedStep
from ..step.recipe import Recipe
from . import checkpoint, metrics_json, model_file, rundir


def log(env: DistEnv, message: str) -> None:
    if env.is_main:
        print(message, flush=True)


def progress_printer(env: DistEnv, epoch: int, total: int) -> Callable[[int], None]:
    """A progress bar within the epoch, only on a terminal: batch logs stay clean."""
    if not (env.is_main and sys.stdout.isatty()):
        return lambda step: None

    def show(step: int) -> None:
        done = int(30 * step / total)
        end = "\n" if step == total else ""
        print(f"\rEpoch {epoch} [{'#' * done}{'.' * (30 - done)}] {step}/{total}",
              end=end, flush=True)

    return show


def _writes(method: Callable) -> Callable:
    """The method's time counts into ``Run.write_s``: what a run spends on its files."""
    @functools.wraps(method)
    def timed(self: "Run", *args, **kwargs):
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.write_s += time.perf_counter() - started
    return timed


@dataclass
class Run:
    """What one training run carries from epoch to epoch, every part known when it is built
    (``loop.start_run``); only the position, history and records change as it goes. Rank 0
    also owns the run directory."""

    config: RunConfig
    env: DistEnv
    device: torch.device
    splits: dataset.MNISTSplits  # on the device
    plan: BatchPlan  # how every epoch is cut into this rank's batches
    recipe: Recipe
    model: nn.Module  # recipe.model, wrapped in DDP when there are several ranks
    step: Optional[GraphedStep]  # the training step as CUDA graphs; None: the eager step
    comm_timer: Optional[CommTimer]  # gloo's all-reduce time, for metrics
    observer: Observer  # timing, step log, profile, stack dumps
    run_dir: Path
    lock: Optional[IO]  # rank 0's hold on the run directory, released when the process ends
    started: float  # perf_counter at the start, for the wall time
    data_load_s: float
    imports_s: float  # process start to the set-up, less the process group's start
    metrics: metrics_json.Metrics  # what metrics.json holds (rank 0 writes it)
    history: list = field(default_factory=list)
    start_epoch: int = 0
    start_step: int = 0  # where the next epoch starts: not 0 only when resuming mid-epoch
    write_s: float = 0.0  # this process's time writing results files (``_writes``)

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    @property
    def global_batch(self) -> int:
        return self.plan.global_batch

    @_writes
    def write_metrics(self, status: metrics_json.Status, error: Optional[str] = None) -> None:
        if self.env.is_main:
            metrics_json.write(self.run_dir, self.metrics, status, error)

    @_writes
    def write_history(self) -> None:
        if self.env.is_main and self.history:
            array = np.array(self.history, dtype=np.float64)
            rundir.write_history(self.run_dir, array)
            if self.config.plots:
                rundir.write_plots(self.run_dir, array)

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint: weights, optimizer, scheduler, RNG, position, records."""
        config, env = self.config, self.env
        graphed = self.step is not None
        warnings = checkpoint.check_compatible(
            state, recipe_hashes(config, graphed, env.world_size), config.model,
            self.steps_per_epoch, config.resume_force)
        checkpoint.restore(state, self.recipe.raw_model, self.recipe.optimizer,
                           self.recipe.scheduler)
        self.start_epoch, self.start_step = state["epoch"], state["step"]
        self.history = [list(row) for row in state["history"]]
        self.metrics["epochs"] = list(state["epoch_records"])
        self.metrics["resumed_from"] = list(state.get("resumed_from", [])) + [
            {"epoch": self.start_epoch, "step": self.start_step, "warnings": warnings,
             "world_size": state["world_size"]}]
        moved = (f", written by {state['world_size']} rank(s), on {env.world_size} now"
                 if state["world_size"] != env.world_size else "")
        log(env, f"Resuming {self.run_dir} at epoch {self.start_epoch}, step {self.start_step}"
                 + moved + (f" (forced: {'; '.join(warnings)})" if warnings else ""))

    @_writes
    def save_checkpoint(self, epoch: int, step: int) -> None:
        """Where the run goes on (``epoch``, ``step``); rank 0 writes. The ranks hold the same
        weights and draw nothing of their own, so rank 0's state is the run's."""
        self.observer.activity.set("writing a checkpoint", epoch, step)
        if self.env.is_main:
            scheduler = self.recipe.scheduler
            checkpoint.save(self.run_dir, {
                "config": self.config.to_dict(),
                "recipe_hash": checkpoint_hash(self.config, self.env.world_size),
                "model": self.recipe.raw_model.state_dict(),
                "optimizer": self.recipe.optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch, "step": step, "history": self.history,
                "epoch_records": self.metrics["epochs"],
                "world_size": self.env.world_size, "steps_per_epoch": self.steps_per_epoch,
                "resumed_from": self.metrics["resumed_from"]})

    @_writes
    def save_model(self) -> None:
        """``model.pt``: the trained network, weights only (run.model_file); rank 0 writes."""
        if self.env.is_main:
            model_file.save(self.run_dir, self.recipe.raw_model, self.config,
                            self.recipe.precision)

    def should_stop(self, stop: StopRequest, step: int) -> bool:
        """Asked after each step (``step`` counted from the epoch's start): do all ranks stop?"""
        stop.step_done()
        # under DDP the check is a collective, so only every few steps; always at the epoch's
        # last step too, or an epoch shorter than stop_check_every would never stop
        if (self.env.distributed and step % self.config.stop_check_every
                and step != self.steps_per_epoch):
            return False
        return process_group.any_rank(stop.wanted(watches_clock=self.env.is_main), self.env)

    def stop_early(self, stop: StopRequest, epoch: int, step: int, where: str) -> None:
        """Checkpoint at (``epoch``, ``step``) and end the run with exit 75."""
        self.save_checkpoint(epoch, step)
        log(self.env, f"Stopping early ({stop.reason()}) {where}; checkpoint written. Resume "
                      f"with --resume {self.run_dir}")
        raise Preempted(stop.reason())

    def evaluate(self, split: dataset.Split) -> engine.EvalResult:
        shard = dataset.shard_range(len(split), self.env.rank, self.env.world_size)
        return engine.evaluate(self.recipe.raw_model, split, shard, self.env,
                               self.recipe.precision, self.config.eval_batch_for(self.device.type))
