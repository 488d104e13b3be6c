"""Training, the torch side of ``python -m mnist_hpc.train``: set up, loop over the epochs,
finish; what a run carries between them is a ``run.Run``.

Wires data -> recipe -> engine -> results. Every collective runs on every rank. ``train.main``
imports this module only once the config and the launcher's environment are known good.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path
from typing import IO, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .. import files
from ..config.options import RunConfig
from ..config.resolve import record_yaml
from ..data import batches, dataset
from ..data.batches import BatchPlan
from ..errors import EXIT_OK, Preempted, describe
from ..job import process_group
from ..job.layout import DistEnv
from ..job.preemption import StopRequest
from ..observe import startup
from ..observe.comm_timer import CommTimer, timed_allreduce_hook
from ..observe.observer import EpochHooks, Observer
from ..step import engine, graphs, verify, warmup
from ..step.models import count_parameters
from ..step.recipe import build as build_recipe
from . import checkpoint, metrics_json, record, report, rundir
from .metrics_json import COMPLETED, FAILED, PREEMPTED, RUNNING
from .state import Run, log, progress_printer

# --- set up ---------------------------------------------------------------------------------

def load_data(config: RunConfig, env: DistEnv, device: torch.device,
              global_batch: int) -> dataset.MNISTSplits:
    """Every split, on the device; refused on every rank if the ranks cannot share it."""
    splits = process_group.agree(env, lambda: dataset.load_splits(
        config.data_dir, config.split_seed, config.limit, config.download))
    process_group.agree(env, lambda: dataset.check_shardable(splits, global_batch,
                                                             env.world_size))
    return dataclasses.replace(splits, train=splits.train.to(device),
                               val=splits.val.to(device), test=splits.test.to(device))


def open_run_dir(config: RunConfig) -> tuple[str, Optional[dict], Optional[str], Optional[IO]]:
    """Rank 0's part: create (or reopen, to resume) the run directory and own it (a lock held
    for the life of the run), read the checkpoint. A completed run named by ``--resume auto``
    is left as it is: the third value says so."""
    done = rundir.completed_message(config.resume, config.results_dir, config.run_id)
    if done is not None:
        return "", None, done, None
    resume_dir = (checkpoint.resolve(config.resume, config.results_dir, config.run_id)
                  if config.resume else None)
    if resume_dir is None:
        run_dir = rundir.create_run_dir(config.results_dir, config.run_id,
                                         reuse=config.resume == "auto")
        return str(run_dir), None, None, rundir.lock_run_dir(run_dir)
    lock = rundir.lock_run_dir(resume_dir)
    return str(resume_dir), checkpoint.load(resume_dir / rundir.CHECKPOINT), None, lock


def prepare_run_dir(config: RunConfig, env: DistEnv
                    ) -> tuple[Path, Optional[dict], Optional[str], Optional[IO]]:
    """The run directory, the checkpoint to resume from and whether the run is complete
    already: rank 0 finds them and every rank receives them, so no rank needs the shared
    filesystem to resume. Rank 0 also returns its lock on the directory (None elsewhere)."""
    found = process_group.agree(env, lambda: open_run_dir(config) if env.is_main
                       else ("", None, None, None))
    run_dir, state, done = process_group.broadcast_object(found[:3], env)
    return Path(run_dir), state, done, found[3]


def wrap_for_ddp(model: nn.Module, config: RunConfig, env: DistEnv,
                 device: torch.device) -> tuple[nn.Module, Optional[CommTimer]]:
    """DDP around the model when there are several ranks; on gloo, with timed all-reduces."""
    if not env.distributed:
        return model, None
    model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                bucket_cap_mb=config.bucket_cap_mb, gradient_as_bucket_view=True,
                static_graph=config.static_graph)
    if env.backend != "gloo":
        return model, None
    comm_timer = CommTimer()
    model.register_comm_hook(comm_timer, timed_allreduce_hook)
    return model, comm_timer


def batch_plan(config: RunConfig, env: DistEnv, n_train: int) -> BatchPlan:
    """How this rank cuts every epoch: the global batch is split over the ranks, or (per-rank
    mode) each rank takes a whole batch."""
    return BatchPlan(n_train, config.global_batch(env.world_size), env.rank, env.world_size,
                     config.seed, config.split_seed, config.shuffle, config.augment,
                     config.normalize, config.channels_last)


def start_run(config: RunConfig, env: DistEnv) -> Optional[Run]:
    """Data, run directory, model and optimizer (restored when resuming), first records;
    None when ``--resume auto`` names a run that completed (nothing to do)."""
    started, imports_s = time.perf_counter(), startup.process_age_s() - env.init_s
    device = torch.device(env.device)
    cuda_graphs = graphs.wanted(config, env, device)  # refused before anything is written
    splits = load_data(config, env, device, config.global_batch(env.world_size))
    data_load_s = time.perf_counter() - started
    run_dir, state, done, lock = prepare_run_dir(config, env)
    if done is not None:
        log(env, done)
        return None
    log(env, f"Run directory: {run_dir}")
    hostnames = process_group.all_gather_objects(socket.gethostname(), env)
    plan = batch_plan(config, env, len(splits.train))
    recipe = build_recipe(config, device, plan.steps_per_epoch, env.world_size, cuda_graphs)
    model, comm_timer = wrap_for_ddp(recipe.model, config, env, device)
    auto_check = None
    if cuda_graphs and config.cuda_graphs == "auto":  # auto verifies before it trusts
        first = next(iter(batches.epoch_batches(splits.train, plan, 0)))
        auto_check = verify.check_graphs(model, recipe, first, env.world_size, device)
        if not auto_check["trusted"]:
            log(env, f"--cuda-graphs auto: {auto_check['path']} not trusted, "
                     f"{auto_check['why']}; training with the plain eager fp32 step")
            cuda_graphs = False
            recipe = build_recipe(config, device, plan.steps_per_epoch, env.world_size, False)
            model, comm_timer = wrap_for_ddp(recipe.model, config, env, device)
    observer = Observer(config, env, device, run_dir, recipe, comm_timer,
                        dataset.to_input(splits.train.images[:2], config.normalize,
                                         config.channels_last), hostnames)
    # the step log's loss tap, where there is one, is captured with the graphed step and adds
    # each replay's loss to its running sum on the device
    step = (graphs.GraphedStep(model, recipe.optimizer, observer.tap or recipe.loss_fn,
                               env.world_size, recipe.precision, device)
            if cuda_graphs else None)
    ran = record.resolve(config, env, device, run_dir.name, cuda_graphs)
    metrics = record.first_metrics(ran, env, device, plan, recipe, cuda_graphs, hostnames,
                                   observer.flops_per_sample, run_dir.name, auto_check)
    run = Run(config, env, device, splits, plan, recipe, model, step, comm_timer, observer,
              run_dir, lock, started, data_load_s, imports_s, metrics)
    if state is not None:
        run.resume(state)
    if env.is_main:
        files.atomic_write(run_dir / "config.yaml", record_yaml(ran, env.world_size))
    run.write_metrics(RUNNING)
    log(env, f"{config.model}: {count_parameters(recipe.raw_model):,} parameters, world size "
             f"{env.world_size} ({env.launcher}, {env.backend or 'no process group'}, {device}), "
             f"global batch {plan.global_batch}, {plan.steps_per_epoch} steps/epoch")
    return run


def warm_up(run: Run) -> float:
    """The timed warm-up before epoch 0 (step.warmup): on CUDA only."""
    return warmup.warm_up(
        run.model, run.recipe, run.step,
        lambda: batches.epoch_batches(run.splits.train, run.plan, run.start_epoch,
                                      shapes_only=True),
        lambda: [run.evaluate(split) for split in (run.splits.train, run.splits.val,
                                                   run.splits.test)],
        run.env.world_size, run.device)


# --- one epoch ------------------------------------------------------------------------------

def train_epoch(run: Run, epoch: int, stop: StopRequest) -> tuple[engine.EpochResult, float]:
    """This rank's steps of ``epoch`` from ``run.start_step``, and the seconds they took."""
    config, env, recipe, first = run.config, run.env, run.recipe, run.start_step
    epoch_batches = batches.epoch_batches(
        run.splits.train, run.plan, epoch, first,
        torchvision_from=((config.data_dir, run.splits.train_indices)
                          if config.loader == "torchvision" else None))
    if run.comm_timer is not None:
        run.comm_timer.take_seconds()  # forget the evaluation's all-reduces
    if recipe.pass_sums is not None:
        recipe.pass_sums.sums.zero_()  # what this epoch trains on, from here (and no warm-up)
    stop.start_clock()
    engine.synchronize(run.device)
    started = time.perf_counter()
    hooks = run.observer.wrap(epoch, first, run.steps_per_epoch, EpochHooks(
        epoch_batches, recipe.loss_fn, should_stop=lambda step: run.should_stop(stop, first + step),
        on_step=progress_printer(env, epoch, run.steps_per_epoch)))
    # through the module, so that the tests' fault injection can replace it
    result = engine.train_one_epoch(
        run.model, hooks.batches, recipe.optimizer, hooks.loss_fn, env.world_size,
        recipe.precision, recipe.scheduler, should_stop=hooks.should_stop, on_step=hooks.on_step,
        graphed=run.step)
    engine.synchronize(run.device)
    return result, time.perf_counter() - started


def record_epoch(run: Run, epoch: int, result: engine.EpochResult, train_s: float) -> None:
    """Evaluate on the train and validation splits; history, metrics.json, plots, one line."""
    figures = run.observer.trained()
    run.observer.activity.set("all-reduce of evaluation sums", epoch)
    started = time.perf_counter()
    pass_sums = run.recipe.pass_sums  # the train figures summed while training, or a pass
    train_eval = pass_sums.take(run.env) if pass_sums else run.evaluate(run.splits.train)
    val_eval = run.evaluate(run.splits.val)
    engine.synchronize(run.device)
    eval_s = time.perf_counter() - started
    run.history.append([train_eval.accuracy, train_eval.loss, val_eval.accuracy, val_eval.loss])
    run.metrics["samples"].update(train=train_eval.count, val=val_eval.count)
    comm_s = run.comm_timer.take_seconds() if run.comm_timer is not None else None
    # every rank's timing, gathered; rank 0 receives the summary (the other ranks write nothing)
    ranks, efficiency, seen = run.observer.record(epoch, result.samples, train_s, figures,
                                                  eval_s, run.env.world_size)
    record = metrics_json.Epoch(
        epoch=epoch, train_s=train_s, eval_s=eval_s, train_samples=result.samples,
        train_samples_per_s=result.samples / train_s, comm_s=comm_s,
        train_acc=train_eval.accuracy, train_loss=train_eval.loss,
        train_figures="pass" if pass_sums else "eval",
        val_acc=val_eval.accuracy, val_loss=val_eval.loss,
        ranks=ranks, **efficiency)  # type: ignore[typeddict-item]
    run.observer.plot_epoch(metrics_json.epoch_curves(record), epoch)
    run.metrics["epochs"].append(record)
    log(run.env, report.epoch_line(run.metrics["epochs"], run.config.epochs, seen))
    run.write_history()
    run.write_metrics(RUNNING)


def run_epoch(run: Run, epoch: int, stop: StopRequest) -> None:
    """Train, evaluate and record one epoch; stop or checkpoint where asked."""
    result, train_s = train_epoch(run, epoch, stop)
    step = run.start_step + result.steps
    if result.stopped and step < run.steps_per_epoch:
        run.stop_early(stop, epoch, step, f"at epoch {epoch}, step {step}")
    run.start_step, last_epoch = 0, epoch + 1 == run.config.epochs
    record_epoch(run, epoch, result, train_s)
    if result.stopped and not last_epoch:  # stopped on the epoch's last step
        run.stop_early(stop, epoch + 1, 0, f"after epoch {epoch}")
    interval = run.config.checkpoint_interval  # and after the last: a completed run's is final
    if interval is not None and ((epoch + 1) % interval == 0 or last_epoch):
        run.save_checkpoint(epoch + 1, 0)


# --- finish ---------------------------------------------------------------------------------

def finish(run: Run, warmup_s: float, startup_s: float) -> None:
    """The test split, evaluated once; the final figures (history and plots are written)."""
    run.observer.activity.set("all-reduce of the test evaluation's sums")
    test_started = time.perf_counter()
    test_eval = run.evaluate(run.splits.test)
    test_eval_s = time.perf_counter() - test_started
    run.metrics["samples"]["test"] = test_eval.count
    run.save_model()  # before the run is marked completed: every completed run has one
    run.metrics["final"] = metrics_json.Final(
        test_acc=test_eval.accuracy, test_loss=test_eval.loss,
        val_acc=run.history[-1][2] if run.history else None,
        wall_s=time.perf_counter() - run.started, data_load_s=run.data_load_s,
        init_process_group_s=run.env.init_s,
        train_s=sum(e["train_s"] for e in run.metrics["epochs"]),
        warmup_s=warmup_s, startup_s=startup_s, imports_s=run.imports_s,
        eval_s=sum(e["eval_s"] for e in run.metrics["epochs"]) + test_eval_s,
        write_s=run.write_s, process_s=startup.process_age_s(),
    )
    log(run.env, f"Test accuracy: {test_eval.accuracy:.4f}, test loss: {test_eval.loss:.4f}")
    run.write_metrics(COMPLETED)
    log(run.env, report.summary(run.metrics, run.run_dir) + f"\nRun directory: {run.run_dir}")


def train(config: RunConfig, env: DistEnv, stop: StopRequest) -> int:
    """Set up, loop over the epochs, finish. Returns EXIT_OK; raises Preempted when a stop
    request ended the run (checkpoint written) and whatever else failed (recorded)."""
    run = start_run(config, env)
    if run is None:
        return EXIT_OK
    try:
        warmup_s = warm_up(run)
        startup_s = startup.end()
        for epoch in range(run.start_epoch, config.epochs):
            run_epoch(run, epoch, stop)
        finish(run, warmup_s, startup_s)
        # no rank leaves before rank 0 has written the last record: under mpiexec (every rank
        # has finalized MPI at the rendezvous) hydra ends the others once one has exited
        process_group.barrier(env)
        return EXIT_OK
    except Preempted:
        run.write_metrics(PREEMPTED)
        # no rank leaves before rank 0 has written the checkpoint and metrics: a launcher
        # (mpiexec, srun, torchrun) ends the other ranks as soon as one exits non-zero
        process_group.barrier(env)
        raise
    except BaseException as exc:
        run.observer.failed(exc)
        run.write_metrics(FAILED, error=f"rank {env.rank}: {describe(exc)}")
        raise
    finally:
        run.observer.close()
