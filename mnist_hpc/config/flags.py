"""The command line and the presets: ``python -m mnist_hpc.train`` flags and ``--config``.

Precedence: RunConfig's defaults < YAML file (``--config``, a preset name or a path) < CLI
flags. Every error is a ``UsageError`` naming the problem and the fix. Torch-free, so that
``--help`` and bad input are answered before torch loads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..files import (
    PACKAGE_DIR,
    UsageParser,
    check_path,
    parse_duration,
    read_yaml,
    short,
)
from .options import CHOICES, FIELD_NAMES, RunConfig, make_config, unknown_key

PRESETS_DIR = PACKAGE_DIR / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    """A preset name (``seed``) or a path to a YAML file."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise UsageError(f"config file {name_or_path!r} does not exist; "
                             f"give a YAML path or a preset: {', '.join(preset_names())}")
        return candidate
    preset = PRESETS_DIR / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise UsageError(f"no preset named {short(name_or_path)}; "
                         f"presets: {', '.join(preset_names())} "
                         "(or give a path to a .yaml file)")
    return preset


def load_yaml(path: Path) -> dict:
    """Read a config file: a mapping of RunConfig keys. Syntax errors name the line."""
    data = read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of keys to values, "
                         f"not a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or key not in FIELD_NAMES:
            raise unknown_key(str(key), str(path))
    return data


def _time_limit(text: str) -> float:
    """Seconds, or [[H:]M:]S as schedulers write walltimes."""
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"time limit {short(text)} is not seconds or H:MM:SS")


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{short(text)} is not a boolean (true/false)")


# CLI flag -> (field, type, help). Defaults are not repeated here: --help prints them from
# RunConfig, so help text cannot drift from the code.
_FLAGS = {
    "--epochs": ("epochs", int, "number of epochs"),
    "--batch-size": ("batch_size", int, "training batch size (global unless --batch-mode per-rank)"),
    "--batch-mode": ("batch_mode", str, "global (strong scaling) or per-rank (weak scaling)"),
    "--scale-lr": ("scale_lr", _bool, "multiply lr by the world size (true/false)"),
    "--lr": ("lr", float, "learning rate"),
    "--model": ("model", str, f"network: {', '.join(CHOICES['model'])}"),
    "--optimizer": ("optimizer", str, f"optimizer: {', '.join(CHOICES['optimizer'])}"),
    "--schedule": ("schedule", str, "learning-rate schedule: constant or onecycle"),
    "--label-smoothing": ("label_smoothing", float, "label smoothing of the loss"),
    "--shuffle": ("shuffle", _bool, "reshuffle the training split every epoch (true/false)"),
    "--dropout": ("dropout", _bool, "keep the network's dropout layers (true/false)"),
    "--normalize": ("normalize", _bool, "standardise inputs with MNIST mean/std (true/false)"),
    "--augment": ("augment", str, f"training-image augmentation: {', '.join(CHOICES['augment'])}"),
    "--sync-bn": ("sync_bn", _bool, "BatchNorm over the global batch under DDP (true/false)"),
    "--seed": ("seed", int, "seed for model init, dropout and shuffling"),
    "--limit": ("limit", int, "keep only the first N images of each split (smoke tests)"),
    "--device": ("device", str, "auto, cpu, cuda or mps"),
    "--backend": ("backend", str, "process-group backend: auto, gloo or nccl"),
    "--loader": ("loader", str, "device (data resident on the device) or torchvision"),
    "--precision": ("precision", str, "auto (bf16 with CUDA graphs, else fp32), fp32 or bf16"),
    "--channels-last": ("channels_last", _bool, "channels_last memory format (true/false)"),
    "--compile": ("compile", _bool, "torch.compile the model (true/false)"),
    "--cuda-graphs": ("cuda_graphs", str, "capture the training step in CUDA graphs: auto (one "
                      "process on one GPU), on or off"),
    "--deterministic": ("deterministic", _bool, "deterministic algorithms, so a seed repeats "
                        "its run on a GPU (true/false)"),
    "--eval-batch-size": ("eval_batch_size", int, "batch size of evaluation passes"),
    "--data-dir": ("data_dir", str, "directory holding MNIST/raw/"),
    "--results-dir": ("results_dir", str, "where run directories are created"),
    "--run-id": ("run_id", str, "name of the run directory (default: time + random suffix)"),
    "--timeout": ("timeout", float, "seconds a collective may wait before the job fails"),
    "--checkpoint-every": ("checkpoint_every", int, "write a checkpoint every N epochs"),
    "--resume": ("resume", str, "RUN_DIR, latest, or auto (resume --run-id if it has a checkpoint)"),
    "--time-limit": ("time_limit", _time_limit, "stop cleanly with a checkpoint before this "
                     "wall time (seconds or H:MM:SS)"),
    "--straggler-threshold": ("straggler_threshold", float, "name a rank a straggler when its "
                              "compute time exceeds this multiple of the ranks' median"),
    "--log-every": ("log_every", int, "write a steps.jsonl line (and TensorBoard scalars, if "
                    "installed) every N steps"),
    "--rank-logs": ("rank_logs", _bool, "also write every rank's output to "
                    "<run>/ranks/rank-N.log (true/false)"),
    "--profile": ("profile", int, "record N steps of the second epoch with torch.profiler"),
    "--profile-ranks": ("profile_ranks", str, "which ranks record the profile: 0 or all"),
}


def build_parser() -> argparse.ArgumentParser:
    defaults = RunConfig()
    parser = UsageParser(prog="python -m mnist_hpc.train",
                     description="Train a CNN on MNIST on one process or many (DDP).")
    parser.add_argument("--config", default="default",
                        help=f"preset ({', '.join(preset_names())}) or YAML file "
                             "(default: %(default)s)")
    for flag, (name, kind, text) in _FLAGS.items():
        default = getattr(defaults, name)
        parser.add_argument(flag, dest=name, type=kind, default=None,
                            help=f"{text} (default: {default})")
    parser.add_argument("--download", dest="download", action="store_true", default=None,
                        help="let torchvision download missing MNIST files")
    parser.add_argument("--resume-force", dest="resume_force", action="store_true", default=None,
                        help="resume even if the checkpoint's recipe differs")
    return parser


def parse_args(argv: Optional[list[str]] = None) -> RunConfig:
    """CLI -> RunConfig. Raises UsageError on any bad input."""
    args = vars(build_parser().parse_args(argv))
    check_path(args["config"], "--config")
    path = resolve_config_path(args.pop("config"))
    values = load_yaml(path)
    values.update({k: v for k, v in args.items() if v is not None})
    for key in ("data_dir", "results_dir", "resume"):
        if isinstance(values.get(key), str):
            check_path(values[key], key)
    for key in ("data_dir", "results_dir"):
        if key in values and isinstance(values[key], str):
            values[key] = str(Path(values[key]).expanduser().resolve())
    return make_config(values, source=str(path))


