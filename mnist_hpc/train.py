"""The entry point: ``python -m mnist_hpc.train`` on one process or under any launcher.

Wires config -> dist -> data -> models -> engine -> results. Only rank 0 prints progress and
writes the run directory; every collective runs on every rank.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from . import checkpoint, data, dist, engine, files, launcher, recipe, results
from .launcher import DistEnv
from .config import RunConfig, parse_args, to_yaml
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE, Preempted, UsageError
from .models import count_parameters

T = TypeVar("T")


# --- stop requests: preemption signals and --time-limit -----------------------------------

@dataclass
class StopRequest:
    """Set by SIGTERM/SIGUSR1 or by the time limit; honoured at the next step boundary."""

    signal_name: Optional[str] = None
    started: float = field(default_factory=time.monotonic)
    time_limit: Optional[float] = None
    longest_step: float = 0.0
    last_check: float = field(default_factory=time.monotonic)

    def handler(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def out_of_time(self) -> bool:
        """Stop while there is still room for a step, an evaluation and a checkpoint."""
        if self.time_limit is None:
            return False
        now = time.monotonic()
        reserve = max(5.0, min(60.0, 0.05 * self.time_limit)) + 3 * self.longest_step
        return now - self.started + reserve >= self.time_limit

    def reason(self) -> str:
        """Why this rank stopped; only rank 0 watches the clock, any rank may get a signal."""
        if self.signal_name:
            return f"signal {self.signal_name}"
        if self.out_of_time():
            return "time limit"
        return "a signal received by another rank"


def install_signal_handlers(stop: StopRequest) -> dict:
    """Route the preemption signals to ``stop``; returns the handlers they replace."""
    return {signum: signal.signal(signum, stop.handler)
            for signum in (signal.SIGTERM, signal.SIGUSR1)}


def restore_signal_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        if handler is not None:  # None: installed outside Python, nothing we can put back
            signal.signal(signum, handler)


# --- helpers -------------------------------------------------------------------------------

def agree(env: DistEnv, action: Callable[[], T]) -> T:
    """Run ``action`` on every rank; if it raised UsageError anywhere, raise the first such
    message on every rank, so all exit 2 together and rank 0 prints it once."""
    error, value = None, None
    try:
        value = action()
    except UsageError as exc:
        error = str(exc) if env.rank == 0 else f"rank {env.rank}: {exc}"
    errors = [e for e in dist.all_gather_objects(error, env) if e is not None]
    if errors:
        raise UsageError(errors[0])
    return value


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


# --- the run -------------------------------------------------------------------------------

@dataclass
class Run:
    """What one training run carries from step to step (rank 0 also owns the run directory)."""

    config: RunConfig
    env: DistEnv
    device: torch.device
    run_dir: Path
    metrics: dict
    history: list = field(default_factory=list)

    def write_metrics(self, status: str) -> None:
        if self.env.is_main:
            self.metrics["status"] = status
            files.write_json(self.run_dir / "metrics.json", self.metrics)

    def write_history(self) -> None:
        if self.env.is_main and self.history:
            array = np.array(self.history, dtype=np.float64)
            results.write_history(self.run_dir, array)
            results.write_plots(self.run_dir, array)


def prepare_run_dir(config: RunConfig, env: DistEnv) -> tuple[Path, Optional[dict]]:
    """Rank 0 creates (or reopens, to resume) the run directory and reads the checkpoint;
    every rank receives both, so no rank needs the shared filesystem to resume."""

    def on_main() -> tuple[str, Optional[dict]]:
        if not env.is_main:
            return "", None
        resume_dir = (checkpoint.resolve(config.resume, config.results_dir, config.run_id)
                      if config.resume else None)
        if resume_dir is None:
            return str(results.create_run_dir(config.results_dir, config.run_id,
                                              reuse=config.resume == "auto")), None
        return str(resume_dir), checkpoint.load(resume_dir / results.CHECKPOINT)

    run_dir, state = dist.broadcast_object(agree(env, on_main), env)
    return Path(run_dir), state


def train(config: RunConfig, env: DistEnv, stop: StopRequest) -> int:
    device = torch.device(env.device)
    wall_start = time.perf_counter()
    load_start = time.perf_counter()
    splits = agree(env, lambda: data.load_splits(config.data_dir, config.split_seed,
                                                 config.limit, config.download))
    global_batch = config.batch_size * (env.world_size if config.batch_mode == "per-rank" else 1)
    agree(env, lambda: data.check_shardable(splits, global_batch, env.world_size))
    train_split, val_split, test_split = (s.to(device) for s in (splits.train, splits.val,
                                                                  splits.test))
    data_load_s = time.perf_counter() - load_start

    run_dir, state = prepare_run_dir(config, env)
    log(env, f"Run directory: {run_dir}")
    hostnames = dist.all_gather_objects(socket.gethostname(), env)

    n_steps = data.steps_per_epoch(len(train_split), global_batch, env.world_size)
    built = recipe.build(config, device, n_steps, env.rank, env.world_size)
    raw_model, optimizer, scheduler = built.raw_model, built.optimizer, built.scheduler
    precision, loss_fn, lr = built.precision, built.loss_fn, built.lr
    model: nn.Module = built.model
    comm_timer = None
    if env.distributed:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    bucket_cap_mb=config.bucket_cap_mb, gradient_as_bucket_view=True,
                    static_graph=config.static_graph)
        if env.backend == "gloo":
            comm_timer = engine.CommTimer()
            model.register_comm_hook(comm_timer, engine.timed_allreduce_hook)
    eval_batch = config.eval_batch_for(device.type)

    start_epoch, start_step = 0, 0
    metrics = {
        "schema": 1, "run_id": run_dir.name, "status": "running", "config": config.to_dict(),
        "model": {"name": config.model, "parameters": count_parameters(raw_model)},
        "world": {"world_size": env.world_size, "nodes": len(set(hostnames)),
                  "local_world_size": env.local_world_size, "launcher": env.launcher,
                  "backend": env.backend, "device": str(device),
                  "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                  else None, "cpu_threads": torch.get_num_threads(),
                  "hostnames": hostnames, "job_id": env.job_id,
                  "master_addr": env.master_addr},
        "batch": {"global": global_batch, "per_rank": global_batch / env.world_size,
                  "mode": config.batch_mode, "steps_per_epoch": n_steps, "lr": lr,
                  "precision": "bf16" if precision.dtype else "fp32"},
        "samples": {}, "epochs": [], "final": {}, "resumed_from": [],
        "versions": results.versions() if env.is_main else {},
    }
    run = Run(config, env, device, run_dir, metrics)
    if state is not None:
        warnings = checkpoint.check_compatible(state, config.recipe_hash(), config.model,
                                               env.world_size, config.resume_force)
        checkpoint.restore(state, raw_model, optimizer, scheduler, env.rank, env.world_size,
                           device)
        start_epoch, start_step = state["epoch"], state["step"]
        run.history = [list(row) for row in state["history"]]
        metrics["epochs"] = list(state["epoch_records"])
        metrics["resumed_from"] = list(state.get("resumed_from", [])) + [
            {"epoch": start_epoch, "step": start_step, "warnings": warnings}]
        log(env, f"Resuming {run_dir} at epoch {start_epoch}, step {start_step}"
                 + (f" (forced: {'; '.join(warnings)})" if warnings else ""))
    if env.is_main:
        files.atomic_write(run_dir / "config.yaml", to_yaml(config))
    run.write_metrics("running")
    log(env, f"{config.model}: {count_parameters(raw_model):,} parameters, world size "
             f"{env.world_size} ({env.launcher}, {env.backend or 'no process group'}, {device}), "
             f"global batch {global_batch}, {n_steps} steps/epoch")

    def save_checkpoint(epoch: int, step: int) -> None:
        rngs = dist.all_gather_objects(checkpoint.rng_state(device), env)
        if env.is_main:
            checkpoint.save(run_dir, {
                "config": config.to_dict(), "recipe_hash": config.recipe_hash(),
                "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch, "step": step, "history": run.history,
                "epoch_records": metrics["epochs"], "rng": rngs,
                "world_size": env.world_size, "resumed_from": metrics["resumed_from"]})

    def should_stop(step: int) -> bool:
        now = time.monotonic()
        stop.longest_step = max(stop.longest_step, now - stop.last_check)
        stop.last_check = now
        # under DDP the check is a collective, so only every few steps; always at the epoch's
        # last step too, or an epoch shorter than stop_check_every would never stop
        if env.distributed and step % config.stop_check_every and step != n_steps:
            return False
        wanted = stop.signal_name is not None or (env.is_main and stop.out_of_time())
        return dist.any_rank(wanted, env)

    interval = config.checkpoint_interval
    try:
        for epoch in range(start_epoch, config.epochs):
            steps = data.train_steps(len(train_split), global_batch, env.rank, env.world_size,
                                     config.seed, epoch, config.shuffle)[start_step:]
            positions = [(s.local, s.global_size) for s in steps]
            if config.loader == "torchvision":
                loader = data.torchvision_loader(config.data_dir, splits.train_indices, True,
                                                 [s.local for s in steps])
                batches = engine.loader_batches(loader, [s.global_size for s in steps], device,
                                                precision)
            else:
                batches = engine.device_batches(train_split, positions, precision)
            if comm_timer is not None:
                comm_timer.take_seconds()
            stop.last_check = time.monotonic()
            engine.synchronize(device)
            t0 = time.perf_counter()
            result = engine.train_one_epoch(
                model, batches, optimizer, loss_fn, env.world_size, precision, scheduler,
                should_stop=lambda step: should_stop(step + start_step),
                on_step=progress_printer(env, epoch, n_steps))
            engine.synchronize(device)
            train_s = time.perf_counter() - t0
            step_now = start_step + result.steps
            if result.stopped and step_now < n_steps:
                save_checkpoint(epoch, step_now)
                log(env, f"Stopping early ({stop.reason()}) at epoch {epoch}, step {step_now}; "
                         f"checkpoint written. Resume with --resume {run_dir}")
                raise Preempted(stop.reason())
            start_step = 0

            t1 = time.perf_counter()
            train_eval = engine.evaluate(raw_model, train_split,
                                         data.shard_range(len(train_split), env.rank,
                                                          env.world_size),
                                         env, precision, eval_batch)
            val_eval = engine.evaluate(raw_model, val_split,
                                       data.shard_range(len(val_split), env.rank,
                                                        env.world_size),
                                       env, precision, eval_batch)
            engine.synchronize(device)
            eval_s = time.perf_counter() - t1
            run.history.append([train_eval.accuracy, train_eval.loss,
                                val_eval.accuracy, val_eval.loss])
            metrics["samples"].update(train=train_eval.count, val=val_eval.count)
            metrics["epochs"].append({
                "epoch": epoch, "train_s": train_s, "eval_s": eval_s,
                "train_samples": result.samples,
                "train_samples_per_s": result.samples / train_s,
                "comm_s": comm_timer.take_seconds() if comm_timer is not None else None,
                "train_acc": train_eval.accuracy, "train_loss": train_eval.loss,
                "val_acc": val_eval.accuracy, "val_loss": val_eval.loss})
            log(env, f"Epoch {epoch}: val. loss: {val_eval.loss:.4f}, val. accuracy: "
                     f"{val_eval.accuracy:.4f} (train {train_s:.1f} s, "
                     f"{result.samples / train_s:,.0f} samples/s, eval {eval_s:.1f} s)")
            run.write_history()
            run.write_metrics("running")
            last_epoch = epoch + 1 == config.epochs
            if result.stopped and not last_epoch:  # stopped on the epoch's last step
                save_checkpoint(epoch + 1, 0)
                log(env, f"Stopping early ({stop.reason()}) after epoch {epoch}; checkpoint "
                         f"written. Resume with --resume {run_dir}")
                raise Preempted(stop.reason())
            if interval is not None and (epoch + 1) % interval == 0 and not last_epoch:
                save_checkpoint(epoch + 1, 0)

        test_eval = engine.evaluate(raw_model, test_split,
                                    data.shard_range(len(test_split), env.rank, env.world_size),
                                    env, precision, eval_batch)
        metrics["samples"]["test"] = test_eval.count
        metrics["final"] = {
            "test_acc": test_eval.accuracy, "test_loss": test_eval.loss,
            "val_acc": run.history[-1][2] if run.history else None,
            "wall_s": time.perf_counter() - wall_start, "data_load_s": data_load_s,
            "init_process_group_s": env.init_s,
            "train_s": sum(e["train_s"] for e in metrics["epochs"]),
        }
        log(env, f"Test accuracy: {test_eval.accuracy:.4f}, test loss: {test_eval.loss:.4f}")
        run.write_metrics("completed")  # the history and plots were written after each epoch
        log(env, f"Run directory: {run_dir}")
        return EXIT_OK
    except Preempted:
        run.write_metrics("preempted")
        # no rank leaves before rank 0 has written the checkpoint and metrics: a launcher
        # (mpiexec, srun, torchrun) ends the other ranks as soon as one exits non-zero
        dist.barrier(env)
        raise
    except BaseException as exc:
        metrics["error"] = f"rank {env.rank}: {describe(exc)}"
        run.write_metrics("failed")
        raise


def _rank_for_messages() -> int:
    """The global rank for printing bad-input errors once, before dist is up. A launcher
    environment too broken to name a rank counts as rank 0: its error must be printed, and a
    process without a valid rank is most likely alone."""
    try:
        return launcher.detect(os.environ).rank
    except UsageError:
        return 0


def _hard_exit_after(seconds: float, code: int) -> threading.Timer:
    """If teardown hangs (a dead peer, a stuck NCCL communicator), exit anyway: a failed
    rank must end the job, not idle until walltime (pytorch/pytorch#97191)."""
    timer = threading.Timer(seconds, lambda: os._exit(code))
    timer.daemon = True
    timer.start()
    return timer


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, Preempted):
        return EXIT_PREEMPTED
    return EXIT_FAILURE


def describe(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line.rstrip('.')}"


def main(argv: Optional[list[str]] = None, keep_signal_handlers: bool = False) -> int:
    """Train; return the exit code. ``keep_signal_handlers``: the process ends right after,
    so a launcher's SIGTERM to the slower ranks (srun --kill-on-bad-exit, once the first
    rank has exited 75) must not kill them during teardown and turn 75 into 143."""
    rank = _rank_for_messages()
    try:
        config = parse_args(argv)
    except UsageError as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    stop = StopRequest(time_limit=config.time_limit)
    previous_handlers = install_signal_handlers(stop)
    joined, hard_exit = False, None
    try:
        with dist.session(config.device, config.backend, config.timeout) as env:
            rank, joined = env.rank, True
            # MPICH's MPI_Finalize (the MPI rendezvous runs it) leaves a SIGUSR1 handler of its
            # own that swallows the signal: take the preemption signals back
            install_signal_handlers(stop)
            try:
                return train(config, env, stop)
            except BaseException as exc:
                # armed before the process group's teardown, which can hang on a dead peer
                hard_exit = _hard_exit_after(60, exit_code(exc))
                raise
    except UsageError as exc:
        if rank == 0:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Preempted:
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print(f"rank {rank}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # the one place every runtime failure is named, per rank
        if not joined:  # init_process_group gave up: usually a rank that never started
            print(f"error: rank {rank} failed to start the process group: {describe(exc)}; "
                  f"check that every rank started and can reach rank 0 (MASTER_ADDR, "
                  f"MASTER_PORT), or raise --timeout", file=sys.stderr, flush=True)
        else:
            print(f"error: rank {rank} failed: {describe(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    finally:
        # teardown is over: a caller that goes on (tests call main() in-process) keeps
        # neither the hard exit nor our signal handlers
        if hard_exit is not None:
            hard_exit.cancel()
        if not keep_signal_handlers:
            restore_signal_handlers(previous_handlers)


def main_exit() -> None:
    """Console-script and ``python -m`` entry point.

    Ends with ``os._exit`` once the output is flushed (every result file was already written
    and fsynced): the interpreter's own shutdown runs the C++ destructors of c10d's stores and
    threads, which at times abort ("terminate called without an active exception", seen on a
    rank whose training had completed) and turn a finished run into a failed job. Only
    successful runs take this exit."""
    code = main(keep_signal_handlers=True)
    if code != EXIT_OK:
        # a failing rank exits normally: the slower shutdown lets every rank print its one
        # line before mpiexec kills the job on the first non-zero exit
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main_exit()
