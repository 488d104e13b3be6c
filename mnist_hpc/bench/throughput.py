"""Training samples/s of the notebook's loop and of this package's paths, one change at a time.

Every case trains the same network on the same full batches in the same order, after a
warm-up that is not timed; each repeat is timed between two device synchronisations, and the
cases take turns, so drifting machine load hits them alike.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from ..data import dataset
from ..data.batches import BatchPlan, repeated_batches, torchvision_batches
from ..errors import UsageError
from ..step import engine, graphs
from ..step.models import MNISTClassifier, build_model
from . import notebook
from .settings import SEED, Settings


@dataclass(frozen=True)
class Case:
    """One throughput measurement: how batches are made and how the step runs."""

    name: str
    description: str
    batch_size: int = notebook.BATCH_SIZE
    loader: str = "device"  # notebook | torchvision | device
    dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    compile: bool = False
    compile_mode: Optional[str] = None  # torch.compile's mode (None: its default)
    graphs: bool = False  # the step captured in CUDA graphs (graphs.GraphedStep)
    keyed_dropout: bool = True  # False: nn.Dropout's draws (the notebook's network as it is)


# one case per name of names.THROUGHPUT_CASES and names.CUDA_CASES, in their order
CASES = {case.name: case for case in (
    Case("notebook", "notebook loop: DataLoader + ToTensor, fp32", loader="notebook"),
    Case("loader", "package, torchvision loader, fp32", loader="torchvision"),
    Case("device", "package, device-resident, fp32"),
    Case("torch_dropout", "as device, torch's dropout (per-rank draws, not keyed per sample)",
         keyed_dropout=False),
    Case("device_cl", "package, device-resident, fp32, channels_last", channels_last=True),
    Case("bf16_cl", "package, device-resident, bf16, channels_last", dtype=torch.bfloat16,
         channels_last=True),
    Case("compiled", "package, device-resident, bf16, channels_last, compiled",
         dtype=torch.bfloat16, channels_last=True, compile=True),
    Case("bf16_cl_2048", "as bf16_cl, batch 2048", batch_size=2048, dtype=torch.bfloat16,
         channels_last=True),
    Case("compiled_2048", "as compiled, batch 2048", batch_size=2048, dtype=torch.bfloat16,
         channels_last=True, compile=True),
    Case("graphed_256", "as device_cl, CUDA graphs, batch 256", batch_size=256,
         channels_last=True, graphs=True),
    Case("graphed_bf16_256", "as bf16_cl, CUDA graphs, batch 256", batch_size=256,
         dtype=torch.bfloat16, channels_last=True, graphs=True),
    Case("graphed_512", "as device_cl, CUDA graphs", channels_last=True, graphs=True),
    Case("graphed_bf16_512", "as bf16_cl, CUDA graphs", dtype=torch.bfloat16,
         channels_last=True, graphs=True),
    Case("graphed_compiled_2048", "as compiled_2048, in CUDA graphs", batch_size=2048,
         dtype=torch.bfloat16, channels_last=True, compile=True, graphs=True),
    Case("max_autotune_2048", "as compiled_2048, mode max-autotune", batch_size=2048,
         dtype=torch.bfloat16, channels_last=True, compile=True, compile_mode="max-autotune"),
)}

Runner = Callable[[int], int]  # run(steps) -> samples trained


def _notebook_runner(batch: int, n_full: int, settings: Settings) -> Runner:
    """The notebook's own loop (``notebook.train_one_epoch``) over its DataLoader's first
    ``n_full`` batches, again and again."""
    device = settings.device
    model, optimizer, loss_fn = notebook.network(device)
    training_data, _ = notebook.datasets(settings.data_dir, settings.limit)
    loader = torch.utils.data.DataLoader(training_data, batch_size=batch)

    def stream() -> Iterator:
        while True:
            yield from itertools.islice(loader, n_full)

    batches = stream()

    def run(steps: int) -> int:
        torch.backends.cudnn.benchmark = False  # the notebook never sets it
        notebook.train_one_epoch(itertools.islice(batches, steps), model, loss_fn, optimizer,
                                 device)
        return steps * batch  # full batches only

    return run


def _package_runner(case: Case, n_full: int, splits: dataset.MNISTSplits,
                    train_split: dataset.Split, settings: Settings) -> Runner:
    """``engine.train_one_epoch`` on the case's batches, precision and layout."""
    device, batch = settings.device, case.batch_size
    torch.manual_seed(SEED)
    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    network = build_model("seed") if case.keyed_dropout else MNISTClassifier()
    raw_model = network.to(device, memory_format=memory_format)
    model = torch.compile(raw_model, mode=case.compile_mode) if case.compile else raw_model
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=notebook.LR)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")  # engine divides by the global batch
    precision = engine.Precision(dtype=case.dtype, channels_last=case.channels_last)
    # captured at its first call, in the untimed warm-up
    step = (graphs.GraphedStep(model, optimizer, loss_fn, 1, precision, device) if case.graphs
            else None)
    plan = BatchPlan(len(train_split), batch, seed=SEED, shuffle=False,
                     channels_last=case.channels_last)

    def torchvision_stream() -> Iterator:
        full = plan.steps(0)[:n_full]
        while True:
            yield from torchvision_batches(settings.data_dir, splits.train_indices, full, plan,
                                           device)

    batches = (torchvision_stream() if case.loader == "torchvision"
               else repeated_batches(train_split, plan))

    def run(steps: int) -> int:
        torch.backends.cudnn.benchmark = True
        result = engine.train_one_epoch(model, itertools.islice(batches, steps), optimizer,
                                        loss_fn, 1, precision, graphed=step)
        return result.samples

    return run


def _step_runner(case: Case, splits: dataset.MNISTSplits, train_split: dataset.Split,
                 settings: Settings) -> Runner:
    """Build the case's model and batch stream.

    Batches cycle over the training split in the notebook's order (no shuffle), full batches
    only, so a compiled model never meets a second shape and every case does the same work.
    """
    n_full = len(train_split) // case.batch_size
    if n_full == 0:
        raise UsageError(f"the training split ({len(train_split)} images) is smaller than one "
                         f"batch of {case.batch_size}; raise --limit")
    if case.loader == "notebook":
        return _notebook_runner(case.batch_size, n_full, settings)
    return _package_runner(case, n_full, splits, train_split, settings)


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": values}


def bench_throughput(names: list[str], splits: dataset.MNISTSplits, settings: Settings,
                     log: Callable[[str], None]) -> dict:
    """Samples/s of each case: warm-up, then ``repeats`` rounds in which each case in turn
    trains ``samples`` samples between two synchronisations."""
    device = settings.device
    train_split = splits.train.to(device)
    out: dict = {}
    runners: dict = {}
    for name in names:
        case = CASES[name]
        steps = max(1, settings.samples // case.batch_size)
        out[name] = {"description": case.description, "batch_size": case.batch_size,
                     "loader": case.loader, "precision": "bf16" if case.dtype else "fp32",
                     "channels_last": case.channels_last, "compile": case.compile,
                     "compile_mode": case.compile_mode, "cuda_graphs": case.graphs,
                     "steps": steps, "samples": steps * case.batch_size}
        try:
            runner = _step_runner(case, splits, train_split, settings)
            engine.synchronize(device)
            t0 = time.perf_counter()
            runner(settings.warmup + (2 if case.compile else 0))  # compile: a few steps more
            engine.synchronize(device)
            out[name]["warmup_s"] = time.perf_counter() - t0
            runners[name] = (runner, steps)
            log(f"  {name}: warm-up {out[name]['warmup_s']:.1f} s")
        except UsageError:
            raise
        except Exception as exc:  # e.g. torch.compile without a C++ compiler: report, go on
            out[name]["error"] = _error(exc)
            log(f"  {name}: failed: {out[name]['error']}")
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for repeat in range(settings.repeats):
        for name, (runner, steps) in runners.items():
            try:
                engine.synchronize(device)
                t0 = time.perf_counter()
                seen = runner(steps)
                engine.synchronize(device)
                rates[name].append(seen / (time.perf_counter() - t0))
            except Exception as exc:
                out[name]["error"] = _error(exc)
            log(f"  repeat {repeat + 1}/{settings.repeats} {name}: "
                + (f"{rates[name][-1]:,.0f} samples/s" if rates[name] else "failed"))
    baseline = statistics.median(rates["notebook"]) if rates.get("notebook") else None
    for name, values in rates.items():
        if values and "error" not in out[name]:
            out[name]["samples_per_s"] = _stats(values)
            out[name]["ratio_to_notebook"] = (statistics.median(values) / baseline
                                              if baseline else None)
    return out
