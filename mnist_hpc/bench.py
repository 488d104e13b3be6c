"""Benchmarks: the notebook's own loop against this package's paths, in one run on one machine.

``python -m mnist_hpc.bench`` measures, on the same device and the same data:

* **throughput**: training samples/s of the notebook's loop (torchvision dataset, ``ToTensor``,
  ``random_split``, ``DataLoader(batch_size=512)``, the ``seed`` network, Adam lr 0.01,
  ``CrossEntropyLoss``) and of this package's paths, one change at a time: its torchvision
  loader, device-resident data, channels_last, bf16 autocast, ``torch.compile`` (and on CUDA,
  batches of 2048). Every case trains the same network on the same full batches in the same
  order, after a warm-up that is not timed; each repeat is timed between two device
  synchronisations, and the cases take turns, so drifting machine load hits them alike.
* **epochs**: the seed recipe's whole run (3 epochs, each followed by the notebook's
  evaluations of the train and validation splits), notebook-style against this package's
  ``--config seed`` path, as a wall-time ratio. Both start from the same weights and dropout
  seed, so their histories can be compared number for number.
* **time to accuracy**: for the ``default`` and ``fast`` presets, run as ``train.py`` runs
  them, the training time (clock between the first step and the last synchronised step)
  until test accuracy first reaches each target, with the time spent evaluating beside it.

A table goes to stdout and everything, with the machine and versions, to a JSON file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

from . import __version__, data, dist, engine
from .launcher import DistEnv
from .config import REPO_DIR, parse_args, replace
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from .models import MNISTClassifier, build_model
from .recipe import build_optimizer, build_scheduler, precision_for

SEED = 0  # weights and dropout of every benchmarked model; the split keeps the notebook's 55
NOTEBOOK_LR = 0.01
NOTEBOOK_BATCH = 512
THROUGHPUT_CASES = ("notebook", "loader", "device", "device_cl", "bf16_cl", "compiled")
CUDA_CASES = ("bf16_cl_2048", "compiled_2048")  # larger batches only pay off on a GPU
TTA_PRESETS = ("default", "fast")
GROUPS = {"throughput": THROUGHPUT_CASES + CUDA_CASES, "epochs": ("epochs",),
          "tta": tuple(f"tta_{p}" for p in TTA_PRESETS)}


@dataclass(frozen=True)
class Case:
    """One throughput measurement: how batches are made and how the step runs."""

    name: str
    description: str
    batch_size: int = NOTEBOOK_BATCH
    loader: str = "device"  # notebook | torchvision | device
    dtype: Optional[torch.dtype] = None
    channels_last: bool = False
    compile: bool = False


CASES = {case.name: case for case in (
    Case("notebook", "notebook loop: DataLoader + ToTensor, fp32", loader="notebook"),
    Case("loader", "package, torchvision loader, fp32", loader="torchvision"),
    Case("device", "package, device-resident, fp32"),
    Case("device_cl", "package, device-resident, fp32, channels_last", channels_last=True),
    Case("bf16_cl", "package, device-resident, bf16, channels_last", dtype=torch.bfloat16,
         channels_last=True),
    Case("compiled", "package, device-resident, bf16, channels_last, compiled",
         dtype=torch.bfloat16, channels_last=True, compile=True),
    Case("bf16_cl_2048", "as bf16_cl, batch 2048", batch_size=2048, dtype=torch.bfloat16,
         channels_last=True),
    Case("compiled_2048", "as compiled, batch 2048", batch_size=2048, dtype=torch.bfloat16,
         channels_last=True, compile=True),
)}


@dataclass(frozen=True)
class Settings:
    device: torch.device
    data_dir: str
    repeats: int
    samples: int  # per timed repeat, per case
    warmup: int  # untimed steps before the first repeat
    limit: Optional[int]  # keep the first N images of each split (--quick)
    epochs: Optional[int]  # override the presets' epochs (--quick)
    evals_per_epoch: int  # test evaluations per epoch in the time-to-accuracy runs
    targets: tuple[float, ...]
    eval_batch_size: Optional[int] = None  # override the presets' (package runs only)


# --- machine -------------------------------------------------------------------------------

def cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(device: torch.device) -> dict:
    import torchvision

    cuda = device.type == "cuda"
    return {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "device": str(device), "gpu_name": torch.cuda.get_device_name(device) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(), "platform": platform.platform(),
        "hostname": platform.node(), "mnist_hpc": __version__,
        "loadavg_start": list(os.getloadavg()),
    }


# --- throughput ----------------------------------------------------------------------------

def _full_batches(n: int, batch_size: int) -> int:
    return n // batch_size


def notebook_datasets(data_dir: str, limit: Optional[int]):
    """The notebook's datasets: torchvision MNIST + ToTensor, split by ``random_split`` seeded
    55. ``limit`` keeps the first N of each split, as ``data.load_splits`` does."""
    import torchvision

    def mnist(train: bool):
        return torchvision.datasets.MNIST(root=data_dir, train=train, download=False,
                                          transform=torchvision.transforms.ToTensor())

    training_data, validation_data = torch.utils.data.random_split(
        mnist(True), [0.8, 0.2], generator=torch.Generator().manual_seed(55))
    if limit is not None:
        training_data = torch.utils.data.Subset(training_data, range(limit))
        validation_data = torch.utils.data.Subset(validation_data, range(limit))
    return training_data, validation_data


def _step_runner(case: Case, splits: data.MNISTSplits, train_split: data.Split,
                 settings: Settings) -> Callable[[int], int]:
    """Build the case's model and batch stream; return ``run(steps) -> samples trained``.

    Batches cycle over the training split in the notebook's order (no shuffle), full batches
    only, so a compiled model never meets a second shape and every case does the same work.
    """
    device, batch = settings.device, case.batch_size
    n_full = _full_batches(len(train_split), batch)
    if n_full == 0:
        raise UsageError(f"the training split ({len(train_split)} images) is smaller than one "
                         f"batch of {batch}; raise --limit")
    torch.manual_seed(SEED)
    if case.loader == "notebook":
        model = MNISTClassifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=NOTEBOOK_LR)
        loss_fn = nn.CrossEntropyLoss()
        training_data, _ = notebook_datasets(settings.data_dir, settings.limit)
        loader = torch.utils.data.DataLoader(training_data, batch_size=batch)

        def stream() -> Iterator:
            while True:
                yield from itertools.islice(loader, n_full)

        batches = stream()

        def run(steps: int) -> int:
            torch.backends.cudnn.benchmark = False  # the notebook never sets it
            model.train()
            seen = 0
            for X, y in itertools.islice(batches, steps):  # noqa: N806 (the notebook's names)
                X, y = X.to(device), y.to(device)  # noqa: N806
                pred = model(X)
                loss = loss_fn(pred, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                seen += len(y)
            return seen

        return run

    memory_format = torch.channels_last if case.channels_last else torch.contiguous_format
    raw_model = MNISTClassifier().to(device, memory_format=memory_format)
    model = torch.compile(raw_model) if case.compile else raw_model
    optimizer = torch.optim.Adam(raw_model.parameters(), lr=NOTEBOOK_LR)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")  # engine divides by the global batch
    precision = engine.Precision(dtype=case.dtype, channels_last=case.channels_last)
    steps_of_epoch = [s.local for s in data.train_steps(len(train_split), batch, 0, 1, SEED, 0,
                                                        shuffle=False)][:n_full]

    def stream() -> Iterator:
        while True:
            if case.loader == "torchvision":
                loader = data.torchvision_loader(settings.data_dir, splits.train_indices, True,
                                                 steps_of_epoch)
                yield from engine.loader_batches(loader, [batch] * n_full, device, precision)
            else:
                yield from engine.device_batches(train_split,
                                                 [(p, batch) for p in steps_of_epoch], precision)

    batches = stream()

    def run(steps: int) -> int:
        torch.backends.cudnn.benchmark = True
        result = engine.train_one_epoch(model, itertools.islice(batches, steps), optimizer,
                                        loss_fn, 1, precision)
        return result.samples

    return run


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "all": values}


def bench_throughput(names: list[str], splits: data.MNISTSplits, settings: Settings,
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
            out[name]["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
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
                out[name]["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
            log(f"  repeat {repeat + 1}/{settings.repeats} {name}: "
                + (f"{rates[name][-1]:,.0f} samples/s" if rates[name] else "failed"))
    baseline = statistics.median(rates["notebook"]) if rates.get("notebook") else None
    for name, values in rates.items():
        if values and "error" not in out[name]:
            out[name]["samples_per_s"] = _stats(values)
            out[name]["ratio_to_notebook"] = (statistics.median(values) / baseline
                                              if baseline else None)
    return out


# --- the seed recipe's whole run -----------------------------------------------------------

def notebook_epochs(settings: Settings, epochs: int) -> dict:
    """The notebook's ``train_network(512, epochs, 0.01)``, as written (evaluate with a
    ``.item()`` per batch, DataLoaders over ToTensor'd images), timed like its ``%%time`` cell:
    from building the loaders and the model to the last evaluation. Seeded as train.py seeds,
    so it starts from the same weights as the package's run; the dropout masks then differ
    (each DataLoader iterator draws a seed from the global RNG), so the two histories agree
    only statistically."""
    device = settings.device
    training_data, validation_data = notebook_datasets(settings.data_dir, settings.limit)
    torch.backends.cudnn.benchmark = False

    def train_one_epoch(dataloader, model, loss_fn, optimizer):
        model.train()
        for X, y in dataloader:  # noqa: N806
            X, y = X.to(device), y.to(device)  # noqa: N806  (the notebook's CPU run has no .to)
            pred = model(X)
            loss = loss_fn(pred, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def evaluate(dataloader, model, loss_fn):
        model.eval()
        size = len(dataloader.dataset)
        num_batches = len(dataloader)
        loss, correct = 0, 0
        with torch.no_grad():
            for X, y in dataloader:  # noqa: N806
                X, y = X.to(device), y.to(device)  # noqa: N806
                pred = model(X)
                loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
        loss /= num_batches
        correct /= size
        return 100 * correct, loss

    engine.synchronize(device)
    start = time.perf_counter()
    train_s = eval_s = 0.0
    torch.manual_seed(SEED)
    cnn_model = MNISTClassifier().to(device)
    torch.manual_seed(SEED * 1_000_003 + 1)  # train.py's dropout seed for rank 0
    train_dataloader = torch.utils.data.DataLoader(training_data, batch_size=NOTEBOOK_BATCH)
    val_dataloader = torch.utils.data.DataLoader(validation_data, batch_size=NOTEBOOK_BATCH)
    optimizer = torch.optim.Adam(cnn_model.parameters(), lr=NOTEBOOK_LR)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        train_one_epoch(train_dataloader, cnn_model, loss_fn, optimizer)
        engine.synchronize(device)
        t1 = time.perf_counter()
        acc_train, loss_train = evaluate(train_dataloader, cnn_model, loss_fn)
        acc_val, loss_val = evaluate(val_dataloader, cnn_model, loss_fn)
        t2 = time.perf_counter()
        train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
        history.append([acc_train, loss_train, acc_val, loss_val])
    wall_s = time.perf_counter() - start
    return {"wall_s": wall_s, "train_s": train_s, "eval_s": eval_s,
            "train_samples_per_s": epochs * len(training_data) / train_s, "history": history}


def package_epochs(settings: Settings, epochs: int) -> dict:
    """``python -m mnist_hpc.train --config seed`` in-process, minus the run directory: data
    loaded (its time included in the wall), each epoch trained, then train and validation
    evaluated as the notebook does."""
    device = settings.device
    config = _preset("seed", settings, epochs=epochs)
    engine.synchronize(device)
    start = time.perf_counter()
    splits = data.load_splits(config.data_dir, config.split_seed, config.limit)
    train_split, val_split = splits.train.to(device), splits.val.to(device)
    engine.synchronize(device)
    data_load_s = time.perf_counter() - start
    result = _run_recipe(config, device, train_split, evaluations=[("train", train_split),
                                                                   ("val", val_split)],
                         evals_per_epoch=1)
    history = [[r["train"]["acc"], r["train"]["loss"], r["val"]["acc"], r["val"]["loss"]]
               for r in result["evals"]]
    return {"wall_s": time.perf_counter() - start, "data_load_s": data_load_s,
            "train_s": result["train_s"], "eval_s": result["eval_s"],
            "train_samples_per_s": result["samples"] / result["train_s"], "history": history,
            "config": {k: config.to_dict()[k] for k in ("model", "precision", "channels_last",
                                                        "eval_batch_size", "compile")}}


def bench_epochs(settings: Settings, log: Callable[[str], None]) -> dict:
    epochs = settings.epochs or parse_args(["--config", "seed"]).epochs
    log(f"  notebook, {epochs} epochs ...")
    notebook = notebook_epochs(settings, epochs)
    log(f"  notebook: {notebook['wall_s']:.1f} s; package --config seed, {epochs} epochs ...")
    package = package_epochs(settings, epochs)
    log(f"  package: {package['wall_s']:.1f} s")
    # accuracies only: the notebook's loss is a mean of batch means, the package's a mean over
    # samples, and the two differ whenever the last batch is short
    diff = max(abs(ra[i] - rb[i]) for ra, rb in zip(notebook["history"], package["history"])
               for i in (0, 2))
    return {"epochs": epochs, "notebook": notebook, "package": package,
            "wall_ratio": package["wall_s"] / notebook["wall_s"],
            "train_speedup": package["train_samples_per_s"] / notebook["train_samples_per_s"],
            "accuracy_max_abs_diff": diff}


# --- a preset's run, evaluated as it goes ---------------------------------------------------

def _preset(name: str, settings: Settings, epochs: Optional[int] = None):
    """A preset's RunConfig as train.py would resolve it, with the bench's overrides."""
    changes: dict = {"limit": settings.limit, "device": settings.device.type}
    if epochs is not None:
        changes["epochs"] = epochs
    if settings.eval_batch_size is not None:
        changes["eval_batch_size"] = settings.eval_batch_size
    return replace(parse_args(["--config", name, "--data-dir", settings.data_dir]), **changes)


def _run_recipe(config, device: torch.device, train_split: data.Split,
                evaluations: list[tuple[str, data.Split]], evals_per_epoch: int,
                targets: tuple[float, ...] = (), target_split: str = "test") -> dict:
    """Train ``config`` as train.py does (same seeds, optimizer, schedule, precision, batches)
    on one process, evaluating ``evaluations`` ``evals_per_epoch`` times per epoch.

    Training and evaluation are timed apart, each between synchronisations; the first time
    ``target_split`` accuracy reaches each target, the clocks so far are recorded.
    """
    env = DistEnv(device=str(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    raw_model = build_model(config.model, config.dropout)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    raw_model = raw_model.to(device, memory_format=memory_format)
    model = torch.compile(raw_model) if config.compile else raw_model
    torch.manual_seed(config.seed * 1_000_003 + 1)
    optimizer = build_optimizer(config, raw_model.parameters(), config.lr)
    n_steps = data.steps_per_epoch(len(train_split), config.batch_size, 1)
    scheduler = build_scheduler(config, optimizer, config.lr, config.epochs * n_steps)
    precision = precision_for(config, device)
    loss_fn = nn.CrossEntropyLoss(reduction="sum", label_smoothing=config.label_smoothing)
    chunk = math.ceil(n_steps / evals_per_epoch)
    train_s = eval_s = 0.0
    samples = steps_done = 0
    evals: list[dict] = []
    reached: dict = {f"{t:g}": None for t in targets}
    for epoch in range(config.epochs):
        steps = data.train_steps(len(train_split), config.batch_size, 0, 1, config.seed, epoch,
                                 config.shuffle)
        batches = engine.device_batches(train_split, [(s.local, s.global_size) for s in steps],
                                        precision)
        for first in range(0, len(steps), chunk):
            engine.synchronize(device)
            t0 = time.perf_counter()
            result = engine.train_one_epoch(model, itertools.islice(batches, chunk), optimizer,
                                            loss_fn, 1, precision, scheduler)
            engine.synchronize(device)
            t1 = time.perf_counter()
            train_s += t1 - t0
            samples += result.samples
            steps_done += result.steps
            record: dict = {"epoch": epoch + (first + result.steps) / len(steps),
                            "step": steps_done}
            for name, split in evaluations:
                found = engine.evaluate(raw_model, split, range(len(split)), env, precision,
                                        config.eval_batch_for(device.type))
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
            "evals": evals, "reached": reached}


def bench_time_to_accuracy(preset: str, settings: Settings, log: Callable[[str], None]) -> dict:
    device = settings.device
    config = _preset(preset, settings, epochs=settings.epochs)
    t0 = time.perf_counter()
    splits = data.load_splits(config.data_dir, config.split_seed, config.limit)
    train_split, test_split = splits.train.to(device), splits.test.to(device)
    engine.synchronize(device)
    data_load_s = time.perf_counter() - t0
    log(f"  {preset}: {config.epochs} epochs, test evaluated {settings.evals_per_epoch}x "
        f"per epoch ...")
    result = _run_recipe(config, device, train_split, [("test", test_split)],
                         settings.evals_per_epoch, settings.targets)
    final = result["evals"][-1]["test"]
    log(f"  {preset}: test {final['acc']:.2f} % after {result['train_s']:.1f} s training "
        f"+ {result['eval_s']:.1f} s evaluating")
    precision = precision_for(config, device)
    return {"config": {k: v for k, v in config.to_dict().items()
                       if k not in ("data_dir", "results_dir")},
            "precision": "bf16" if precision.dtype else "fp32", "data_load_s": data_load_s,
            "train_s": result["train_s"], "eval_s": result["eval_s"],
            "train_samples_per_s": result["samples"] / result["train_s"],
            "final_test_acc": final["acc"], "final_test_loss": final["loss"],
            "reached": result["reached"],
            "curve": [{"epoch": r["epoch"], "step": r["step"], "test_acc": r["test"]["acc"],
                       "train_s": r["train_s"], "eval_s": r["eval_s"]} for r in result["evals"]]}


# --- report --------------------------------------------------------------------------------

def _fmt(value: Optional[float], spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def format_report(report: dict) -> str:
    m = report["machine"]
    lines = [f"mnist_hpc.bench on {m['device']} ({m['gpu_name'] or m['cpu_model']}; "
             f"{m['cpu_count']} CPUs, {m['torch_threads']} torch threads; torch {m['torch']})",
             f"load average at start {m['loadavg_start'][0]:.2f}, at end "
             f"{m['loadavg_end'][0]:.2f}"]
    if report.get("throughput"):
        s = report["settings"]
        lines += ["", f"Training throughput ({s['repeats']} repeats of ~{s['samples']} samples "
                      f"after {s['warmup']} warm-up steps; median [min-max])",
                  f"{'case':<14} {'batch':>5} {'samples/s':>10} {'[min-max]':>17} "
                  f"{'x notebook':>10} {'warm-up s':>9}  description"]
        for name, row in report["throughput"].items():
            if "samples_per_s" not in row:
                lines.append(f"{name:<14} {row['batch_size']:>5} {'failed':>10}  "
                             f"{row.get('error', '')}")
                continue
            rate = row["samples_per_s"]
            spread = f"[{rate['min']:,.0f}-{rate['max']:,.0f}]"
            lines.append(f"{name:<14} {row['batch_size']:>5} {rate['median']:>10,.0f} "
                         f"{spread:>17} {_fmt(row['ratio_to_notebook']):>10} "
                         f"{row['warmup_s']:>9.1f}  {row['description']}")
    if report.get("epochs"):
        e = report["epochs"]
        nb, pk = e["notebook"], e["package"]
        lines += ["", f"Seed recipe, {e['epochs']} epochs with the notebook's evaluations "
                      f"(train + val splits) after each",
                  f"{'':<10} {'wall s':>8} {'train s':>8} {'eval s':>8} {'samples/s':>10} "
                  f"{'val acc':>8}",
                  f"{'notebook':<10} {nb['wall_s']:>8.1f} {nb['train_s']:>8.1f} "
                  f"{nb['eval_s']:>8.1f} {nb['train_samples_per_s']:>10,.0f} "
                  f"{nb['history'][-1][2]:>8.2f}",
                  f"{'package':<10} {pk['wall_s']:>8.1f} {pk['train_s']:>8.1f} "
                  f"{pk['eval_s']:>8.1f} {pk['train_samples_per_s']:>10,.0f} "
                  f"{pk['history'][-1][2]:>8.2f}   (wall includes "
                  f"{pk['data_load_s']:.1f} s loading data)",
                  f"wall-time ratio package/notebook: {e['wall_ratio']:.2f}; training speed-up "
                  f"{e['train_speedup']:.2f}x; largest accuracy difference "
                  f"{e['accuracy_max_abs_diff']:.3g} points"]
    if report.get("time_to_accuracy"):
        targets = report["settings"]["targets"]
        lines += ["", "Time to test accuracy (training s + evaluation s beside it; "
                      "evaluated on the test split as training goes)",
                  f"{'preset':<10} {'prec':>5} "
                  + " ".join(f"{'to ' + format(t, 'g') + ' %':>18}" for t in targets)
                  + f" {'final %':>8} {'train s':>8} {'eval s':>7}"]
        for preset, row in report["time_to_accuracy"].items():
            if "error" in row:
                lines.append(f"{preset:<10} failed: {row['error']}")
                continue
            cells = []
            for target in targets:
                hit = row["reached"][f"{target:g}"]
                cells.append(f"{'not reached':>18}" if hit is None else
                             f"{hit['train_s']:>8.1f} +{hit['eval_s']:>5.1f} @{hit['epoch']:.2f}")
            lines.append(f"{preset:<10} {row['precision']:>5} " + " ".join(cells)
                         + f" {row['final_test_acc']:>8.2f} {row['train_s']:>8.1f} "
                           f"{row['eval_s']:>7.1f}")
        lines.append("(@: epochs trained when first reached)")
    s = report.get("summary") or {}
    if any(v is not None for v in s.values()):
        lines += ["", "Summary (x notebook: ratio to the notebook's figure on this machine)",
                  f"  seed recipe training throughput (fp32, channels_last): "
                  f"{_fmt(s['seed_recipe_throughput_x_notebook'])} x",
                  f"  bf16 + channels_last training throughput: "
                  f"{_fmt(s['bf16_cl_throughput_x_notebook'])} x; best case "
                  f"{_fmt(s['best_throughput_x_notebook'])} x",
                  f"  seed recipe's whole run, wall time: "
                  f"{_fmt(s['seed_epochs_wall_x_notebook'])} x",
                  f"  fast preset to 99 % test (training + evaluation): "
                  f"{_fmt(s['fast_to_99_s'], '.1f')} s = "
                  f"{_fmt(s['fast_to_99_x_notebook_epochs'])} x the notebook's whole run "
                  f"({_fmt(s['notebook_epochs_wall_s'], '.1f')} s)"]
    return "\n".join(lines)


# --- CLI -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_hpc.bench", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Training throughput, the seed recipe's wall time and time to accuracy: "
                    "the notebook's loop against this package, in one run on one machine.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="device to measure (auto: cuda if present, else cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per timed repeat (default: 4096 on CPU, 49152 on GPU)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps before timing (default: 2 on CPU, 20 on GPU)")
    parser.add_argument("--only", default=None,
                        help="comma-separated cases or groups to run: "
                             + ", ".join(list(GROUPS) + list(CASES) + ["epochs"]
                                         + list(GROUPS["tta"])))
    parser.add_argument("--evals-per-epoch", type=int, default=4,
                        help="test evaluations per epoch in the time-to-accuracy runs")
    parser.add_argument("--targets", default="98,99", help="test accuracies to time, percent")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the presets' epochs (epochs and time-to-accuracy runs)")
    parser.add_argument("--limit", type=int, default=None,
                        help="keep only the first N images of each split")
    parser.add_argument("--eval-batch-size", type=int, default=None,
                        help="override the presets' eval_batch_size in the package's runs")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (< 1 min on 2 cores): 1 repeat, tiny subsets, "
                             "1 epoch, no compile unless --only names it")
    parser.add_argument("--data-dir", default=str(REPO_DIR / "data"),
                        help="directory holding MNIST/raw/")
    parser.add_argument("--out", default="bench.json", help="JSON file to write")
    return parser


def _selected(only: Optional[str], device: torch.device, quick: bool) -> list[str]:
    known = set(CASES) | {"epochs"} | set(GROUPS["tta"])
    if only is None:
        names = list(THROUGHPUT_CASES) + (list(CUDA_CASES) if device.type == "cuda" else [])
        if quick:  # no compile (minutes) and no batch larger than the tiny subsets
            names = [n for n in names if not CASES[n].compile and n not in CUDA_CASES]
        return names + ["epochs"] + list(GROUPS["tta"])
    names: list[str] = []
    for item in (part.strip() for part in only.split(",") if part.strip()):
        if item in GROUPS:
            group = [n for n in GROUPS[item]
                     if n not in CUDA_CASES or device.type == "cuda"]
            names += [n for n in group if n not in names]
        elif item in known:
            if item not in names:
                names.append(item)
        else:
            raise UsageError(f"--only: unknown name {item!r}; choose from "
                             f"{', '.join(list(GROUPS) + sorted(known))}")
    return names


def settings_from(args: argparse.Namespace, device: torch.device) -> Settings:
    gpu = device.type == "cuda"
    for name in ("repeats", "samples", "warmup", "evals_per_epoch", "epochs", "limit",
                 "eval_batch_size"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    try:
        targets = tuple(float(t) for t in args.targets.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--targets must be comma-separated percentages, got {args.targets!r}")
    if args.quick:
        return Settings(device, args.data_dir, repeats=1, samples=args.samples or 256,
                        warmup=1 if args.warmup is None else args.warmup,
                        limit=args.limit or 1024, epochs=args.epochs or 1,
                        evals_per_epoch=1, targets=targets, eval_batch_size=args.eval_batch_size)
    return Settings(device, args.data_dir, repeats=args.repeats,
                    samples=args.samples or (49152 if gpu else 4096),
                    warmup=args.warmup if args.warmup is not None else (20 if gpu else 2),
                    limit=args.limit, epochs=args.epochs,
                    evals_per_epoch=args.evals_per_epoch, targets=targets,
                    eval_batch_size=args.eval_batch_size)


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    device = dist.pick_device(args.device, DistEnv())  # also sets the CPU threads
    settings = settings_from(args, device)
    names = _selected(args.only, device, args.quick)
    data.load_splits(settings.data_dir, limit=1)  # verify and decompress once, up front
    report: dict = {"schema": 1, "argv": sys.argv[1:], "quick": args.quick,
                    "machine": machine_info(device),
                    "settings": {"device": str(device), "repeats": settings.repeats,
                                 "samples": settings.samples, "warmup": settings.warmup,
                                 "limit": settings.limit, "epochs": settings.epochs,
                                 "evals_per_epoch": settings.evals_per_epoch,
                                 "targets": list(settings.targets),
                                 "eval_batch_size": settings.eval_batch_size, "names": names},
                    "throughput": {}, "epochs": None, "time_to_accuracy": {}}
    started = time.perf_counter()
    cases = [n for n in names if n in CASES]
    if cases:
        log(f"Throughput: {', '.join(cases)}")
        splits = data.load_splits(settings.data_dir, limit=settings.limit)
        report["throughput"] = bench_throughput(cases, splits, settings, log)
    if "epochs" in names:
        log("Seed recipe, whole run: notebook vs package")
        report["epochs"] = bench_epochs(settings, log)
    for preset in TTA_PRESETS:
        if f"tta_{preset}" in names:
            log(f"Time to accuracy: {preset}")
            try:
                report["time_to_accuracy"][preset] = bench_time_to_accuracy(preset, settings,
                                                                            log)
            except UsageError:
                raise
            except Exception as exc:
                report["time_to_accuracy"][preset] = {"error": f"{type(exc).__name__}: {exc}"}
    report["machine"]["loadavg_end"] = list(os.getloadavg())
    report["total_s"] = time.perf_counter() - started
    report["summary"] = summary(report)
    return report


def summary(report: dict) -> dict:
    """The headline ratios, each None when its parts were not measured."""
    rows = report["throughput"]

    def ratio(name: str) -> Optional[float]:
        return rows.get(name, {}).get("ratio_to_notebook")

    epochs = report["epochs"] or {}
    fast = report["time_to_accuracy"].get("fast", {})
    hit = (fast.get("reached") or {}).get("99")
    notebook_wall = epochs.get("notebook", {}).get("wall_s")
    return {
        # the seed preset's own path: device-resident, fp32, channels_last
        "seed_recipe_throughput_x_notebook": ratio("device_cl"),
        "bf16_cl_throughput_x_notebook": ratio("bf16_cl"),
        "best_throughput_x_notebook": max((r for r in map(ratio, rows) if r), default=None),
        "seed_epochs_wall_x_notebook": epochs.get("wall_ratio"),
        "fast_to_99_s": hit["wall_s"] if hit else None,
        "notebook_epochs_wall_s": notebook_wall,
        "fast_to_99_x_notebook_epochs": (hit["wall_s"] / notebook_wall
                                         if hit and notebook_wall else None),
    }


def failures(report: dict) -> list[str]:
    found = [f"{name}: {row['error']}" for name, row in report["throughput"].items()
             if "error" in row]
    found += [f"tta_{name}: {row['error']}" for name, row in report["time_to_accuracy"].items()
              if "error" in row]
    return found


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        report = run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    print()
    print(format_report(report))
    print(f"\nWrote {out}")
    problems = failures(report)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_FAILURE if problems else EXIT_OK


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
