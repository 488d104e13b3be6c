"""What a run shows of itself beyond its numbers, gathered in one object per rank: per-rank
timing and stragglers (``timing``), FLOPs and MFU (``flops``), the step log (``steplog``),
the profile (``profiling``), stack dumps and what the job was doing (``hangs``), per-rank logs
(``ranklog``). docs/observability.md.

The trainer hands each epoch's batches, loss function and callbacks to ``Observer.wrap`` and
trains on what comes back; the training step itself (``engine.train_one_epoch``) is unchanged.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from ..config.options import RunConfig
from ..job import process_group
from ..job.layout import DistEnv
from ..step.recipe import Recipe
from . import failures, flops, ranklog, steplog, timing
from .comm_timer import CommTimer
from .profiling import StepProfiler

GRADIENTS = "all-reduce of gradients"


@dataclass
class EpochHooks:
    """The arguments of ``engine.train_one_epoch`` that the observer instruments."""

    batches: Iterable
    loss_fn: nn.Module
    should_stop: Callable[[int], bool]
    on_step: Callable[[int], None]


class Observer:
    """One rank's instruments for a run (rank 0 also records and writes)."""

    def __init__(self, config: RunConfig, env: DistEnv, device: torch.device, run_dir: Path,
                 recipe: Recipe, comm_timer: Optional[CommTimer],
                 sample_inputs: torch.Tensor, hostnames: Sequence[str] = ()) -> None:
        self.config, self.env, self.run_dir = config, env, run_dir
        self.hostnames = hostnames  # every rank's, in rank order: a failure names their nodes
        if config.rank_logs:
            ranklog.copy_output(run_dir, env.rank)
        ranklog.tag_warnings(env.rank)
        self.activity = failures.Activity()
        self.stacks = failures.StackDumps(run_dir, env.rank)
        self.clock = timing.StepClock(device, comm_timer, recipe.optimizer)
        self.tap = self.steplog = None
        if config.log_every:
            self.tap = steplog.LossTap(recipe.loss_fn, device)
            self.steplog = steplog.StepLog(config.log_every, self.tap, env, run_dir,
                                           recipe.optimizer)
        self.profiler = (StepProfiler(config.profile, run_dir, env.rank, device)
                         if config.profile and (config.profile_ranks == "all" or env.is_main)
                         else None)
        self.host = socket.gethostname()
        # counted once, on the rank that reports them
        self.flops_per_sample = (flops.flops_per_sample(recipe.raw_model, sample_inputs)
                                 if env.is_main else None)
        self.peak_tflops = flops.peak_tflops(
            torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            bf16=recipe.precision.dtype == torch.bfloat16)

    def wrap(self, epoch: int, first: int, steps_per_epoch: int, hooks: EpochHooks) -> EpochHooks:
        """The epoch's hooks, instrumented; steps count from ``first`` (a resumed epoch)."""
        self.clock.reset()
        if self.steplog is not None:
            self.steplog.restart_clock()
        if self.profiler is not None:
            self.profiler.epoch_started(epoch)
        self.activity.set(GRADIENTS, epoch, first + 1)
        timed_stop = self.clock.comm(hooks.should_stop)
        timed_all_reduce = self.clock.comm(process_group.all_reduce_sum)

        def on_step(step: int) -> None:
            hooks.on_step(step)
            if self.steplog is not None:
                self.activity.set("all-reduce of the step log's loss", epoch, first + step)
                self.steplog.step(epoch, epoch * steps_per_epoch + first + step,
                                  timed_all_reduce)
            if self.profiler is not None:
                self.profiler.step_done()

        def should_stop(step: int) -> bool:
            self.activity.set("all-reduce of the stop check", epoch, first + step)
            stop = timed_stop(step)
            self.activity.set(GRADIENTS, epoch, first + step + 1)
            return stop

        return EpochHooks(self.clock.batches(hooks.batches), self.tap or hooks.loss_fn,
                          should_stop, on_step)

    def trained(self) -> dict:
        """The epoch's training is over (the device has caught up): this rank's figures."""
        if self.profiler is not None:
            self.profiler.epoch_ended()
        return self.clock.finish()

    def record(self, epoch: int, samples: int, train_s: float, figures: dict, eval_s: float,
               world_size: int) -> tuple[dict, dict, str]:
        """Gather every rank's ``figures`` (from ``trained``) and ``eval_s``. On rank 0: the
        epoch record's ``ranks`` summary, its ``tflops`` and ``mfu``, and the text for the
        epoch line; empty elsewhere. A collective."""
        self.activity.set("gather of per-rank timing", epoch)
        per_rank = process_group.all_gather_objects(
            {**figures, "eval_s": eval_s, "host": self.host}, self.env)
        if not self.env.is_main:
            return {}, {}, ""
        ranks = timing.summarize(per_rank, self.config.straggler_threshold)
        efficiency = flops.efficiency(self.flops_per_sample, samples, train_s, self.peak_tflops,
                                      world_size)
        text = timing.ranks_text(ranks, world_size) + f"; {efficiency['tflops']:.3f} TFLOP/s"
        if efficiency["mfu"] is not None:
            text += f", MFU {100 * efficiency['mfu']:.1f} %"
        return ranks, efficiency, text

    def plot_epoch(self, curves: dict[str, float], epoch: int) -> None:
        """The epoch's figures as TensorBoard curves, where the step log writes them."""
        if self.steplog is not None:
            self.steplog.epoch(curves, epoch)

    def failed(self, exc: BaseException) -> None:
        """Stack to ``<run>/ranks/rank-N.txt``; where it happened (and for a failed
        collective, which one and who is missing) added to the error line."""
        failures.explain(exc, self.env, self.activity, self.stacks, self.run_dir,
                         self.hostnames)

    def close(self) -> None:
        if self.steplog is not None:
            self.steplog.close()
        self.stacks.close()
