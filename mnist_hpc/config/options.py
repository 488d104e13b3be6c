"""RunConfig: everything a run depends on, typed, commented and validated, and the checks
that build one from a mapping (a YAML file's, the command line's: ``mnist_hpc.config.flags``).

Every error is a ``UsageError`` whose message names the problem and the fix; ``train``
turns it into exit 2. Torch-free.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, fields
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from ..errors import UsageError
from ..files import REPO_DIR, check_name, short

MAX_TIMEOUT = 7 * 24 * 3600  # a collective waiting longer has hung; larger overflows timedelta
CHOICES = {
    "model": ("seed", "cnn", "resnet", "vit"),
    "optimizer": ("adam", "adamw", "sgd"),
    "schedule": ("constant", "onecycle"),
    "device": ("auto", "cpu", "cuda", "mps"),
    "backend": ("auto", "gloo", "nccl"),
    "batch_mode": ("global", "per-rank"),
    "loader": ("device", "torchvision"),
    "precision": ("auto", "fp32", "bf16"),
    "augment": ("none", "shift", "affine"),
    "cuda_graphs": ("auto", "on", "off"),
    "profile_ranks": ("0", "all"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on. Defaults are the `default` preset's."""

    # --- the recipe (the notebook's, unless a preset says otherwise) ---
    model: str = "cnn"  # seed: the notebook's network (softmax output); cnn: same net, logits
    optimizer: str = "adam"  # the notebook uses Adam
    lr: float = 0.003  # the default preset's; measured best of 0.001, 0.003, 0.01 (README)
    betas: tuple = (0.9, 0.999)  # Adam's defaults; the fast preset lowers them
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"  # onecycle: linear warm-up then cosine-free linear decay
    warmup_fraction: float = 0.2  # onecycle only: share of steps spent warming up
    label_smoothing: float = 0.0
    batch_size: int = 512  # the notebook's; global by default (see batch_mode)
    batch_mode: str = "global"  # global: split over ranks (strong scaling); per-rank: weak scaling
    scale_lr: bool = False  # multiply lr by the world size (linear scaling rule); never silent
    epochs: int = 3
    shuffle: bool = True  # the notebook never shuffles; the seed preset turns this off
    seed: int = 0  # model init, dropout and shuffling; the split always uses split_seed
    split_seed: int = 55  # the notebook's torch.Generator().manual_seed(55)
    dropout: bool = True  # false zeroes every dropout layer (to compare 1 rank with N exactly)
    normalize: bool = False  # standardise inputs (MNIST mean/std); off = the notebook's [0, 1]
    limit: Optional[int] = None  # keep the first N images of each split (smoke tests)
    # training images only, on the device, per sample from (seed, epoch, index): augment.py
    augment: str = "none"  # shift: up to 2 px each way; affine: shift + small rotation/scale
    # BatchNorm statistics over the global batch instead of each rank's slice (ResNet only;
    # off: per-rank statistics, no extra collective per layer; see README)
    sync_bn: bool = False
    # --- data and output ---
    data_dir: str = str(REPO_DIR / "data")  # holds MNIST/raw/*.gz, torchvision's layout
    download: bool = False  # let torchvision try to download missing files
    results_dir: str = str(REPO_DIR / "results")
    run_id: Optional[str] = None  # default: time + random suffix (unique per second)
    # --- hardware and speed ---
    device: str = "auto"  # auto: cuda if present, else mps (one process), else cpu
    backend: str = "auto"  # auto: nccl on cuda, gloo otherwise
    loader: str = "device"  # device: data resident on the device; torchvision: the notebook's
    precision: str = "auto"  # auto: bf16 with CUDA graphs (where it pays), fp32 elsewhere
    channels_last: bool = True  # faster convolutions on CPU and GPU; same numbers
    compile: bool = False  # torch.compile the model (pays a one-time compile)
    # capture the training step in CUDA graphs; auto: on for one process on one GPU (see graphs)
    cuda_graphs: str = "auto"
    deterministic: bool = False  # deterministic kernels: the same seed, the same run on a GPU
    # None: 2048 on CUDA (fewer launches), 128 on CPU (measured: fp32 evaluation runs about
    # 2x faster at 128 than at 2048 there, cache-sized batches). Counts never depend on it.
    eval_batch_size: Optional[int] = None
    bucket_cap_mb: float = 25.0  # DDP gradient bucket size (PyTorch's default)
    static_graph: bool = False  # DDP static_graph; only helps some models
    # --- reliability ---
    timeout: float = 300.0  # seconds a collective may wait before every rank gives up
    checkpoint_every: Optional[int] = None  # epochs; None: 1 when epochs > 1, else off
    resume: Optional[str] = None  # RUN_DIR, "latest" or "auto" (resume run_id if it exists)
    resume_force: bool = False  # accept a checkpoint from another config
    time_limit: Optional[float] = None  # seconds of wall time after which to stop cleanly
    stop_check_every: int = 10  # steps between the collective checks for a stop request
    # --- seeing inside a run (README "Seeing inside a run") ---
    # a rank whose compute time exceeds this many times the ranks' median is named a straggler;
    # 1.2 lets ordinary jitter pass and catches a slow GPU, a throttled node or a noisy neighbour
    straggler_threshold: float = 1.2
    log_every: Optional[int] = None  # steps between steps.jsonl lines; None: no step log
    rank_logs: bool = False  # every rank's output also to <run>/ranks/rank-N.log
    profile: Optional[int] = None  # steps of the second epoch to record with torch.profiler
    profile_ranks: str = "0"  # 0: only rank 0 records the profile (one trace); all: every rank

    def __post_init__(self) -> None:
        for name in FLOAT_FIELDS:  # nan passes every comparison below, and inf breaks timers
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{name} must be a finite number, got {short(value)}")
        for name, options in CHOICES.items():
            value = getattr(self, name)
            if value not in options:
                raise UsageError(f"{name} must be one of {', '.join(options)}, got {short(value)}")
        positive = ("lr", "batch_size", "epochs", "timeout",
                    "bucket_cap_mb", "stop_check_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be > 0, got {short(getattr(self, name))}")
        for name in ("limit", "checkpoint_every", "time_limit", "eval_batch_size", "log_every",
                     "profile"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be > 0 (or left unset), got {short(value)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0.0 < self.warmup_fraction < 1.0:
            raise UsageError(f"warmup_fraction must be in (0, 1), got {self.warmup_fraction!r}")
        if self.weight_decay < 0:
            raise UsageError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.momentum < 0:
            raise UsageError(f"momentum must be >= 0, got {self.momentum!r}")
        # the trainer derives its named streams from these (mnist_hpc.seeds)
        if not 0 <= self.seed < 2**31:
            raise UsageError(f"seed must be in [0, 2**31), got {short(self.seed)}")
        if not 0 <= self.split_seed < 2**32:
            raise UsageError(f"split_seed must be in [0, 2**32), got {short(self.split_seed)}")
        if self.timeout > MAX_TIMEOUT:
            raise UsageError(f"timeout must be at most {MAX_TIMEOUT} seconds (a week), "
                             f"got {self.timeout!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise UsageError(f"betas must be two numbers in [0, 1), got {short(list(self.betas))}")
        if self.run_id is not None:
            check_name(self.run_id, "run_id")
        if self.straggler_threshold < 1.0:
            raise UsageError(f"straggler_threshold must be >= 1 (a multiple of the median "
                             f"compute time), got {short(self.straggler_threshold)}")
        if self.profile is not None and self.epochs < 2:
            raise UsageError(f"profile records steps of the second epoch, but epochs is "
                             f"{self.epochs}; give --epochs 2 or more")
        # flags that cannot apply are refused, not ignored
        if self.resume_force and self.resume is None:
            raise UsageError("--resume-force applies only with --resume; drop it, or resume a "
                             "run with --resume RUN_DIR")
        if self.run_id is not None and self.resume not in (None, "auto"):
            raise UsageError(f"--run-id names a new run, but --resume {short(self.resume)} "
                             f"continues an existing one; drop --run-id, or use --resume auto")
        if self.augment != "none" and self.loader == "torchvision":
            raise UsageError("augment works on the device path only; use --loader device, "
                             "or --augment none to compare with the notebook's loader")
        if self.cuda_graphs == "on" and self.device in ("cpu", "mps"):
            raise UsageError(f"CUDA graphs need --device cuda, not {self.device}; "
                             f"use --cuda-graphs auto or off")

    def eval_batch_for(self, device_type: str) -> int:
        """The evaluation batch size, with the per-device default applied."""
        if self.eval_batch_size is not None:
            return self.eval_batch_size
        return 2048 if device_type == "cuda" else 128

    @property
    def checkpoint_interval(self) -> Optional[int]:
        """Epochs between checkpoints, with the default applied (None: no checkpoints)."""
        if self.checkpoint_every is not None:
            return self.checkpoint_every
        return 1 if self.epochs > 1 else None

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in fields(self)}

    def recipe_hash(self) -> str:
        """Hash of what decides the numbers: a checkpoint only resumes under the same recipe."""
        ignored = {"epochs", "data_dir", "download", "results_dir", "run_id", "device", "backend",
                   "timeout", "checkpoint_every", "resume", "resume_force", "time_limit",
                   "stop_check_every", "compile", "loader", "eval_batch_size",
                   "cuda_graphs", "deterministic",
                   "straggler_threshold", "log_every", "rank_logs", "profile", "profile_ranks"}
        recipe = {k: v for k, v in self.to_dict().items() if k not in ignored}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


FIELD_TYPES = get_type_hints(RunConfig)
FIELD_NAMES = [f.name for f in fields(RunConfig)]
FLOAT_FIELDS = [name for name, hint in FIELD_TYPES.items() if hint in (float, Optional[float])]


def _coerce(name: str, value: Any) -> Any:
    """Check a YAML value against the field's type; ints are accepted where floats are."""
    hint = FIELD_TYPES[name]
    optional = get_origin(hint) is Union and type(None) in get_args(hint)
    if value is None:
        if optional:
            return None
        raise UsageError(f"{name} may not be empty (null); give a value or remove the key")
    base = next(a for a in get_args(hint) if a is not type(None)) if optional else hint
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        tuple: isinstance(value, (list, tuple))
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
    }[base]
    if not ok:
        expected = {tuple: "a list of numbers"}.get(base, base.__name__)
        raise UsageError(f"{name} must be {expected}, got {type(value).__name__} {short(value)}")
    if base is float:
        return float(value)
    if base is tuple:
        return tuple(float(v) for v in value)
    return value


def unknown_key(key: str, source: str) -> UsageError:
    close = difflib.get_close_matches(key, FIELD_NAMES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(FIELD_NAMES)}"
    return UsageError(f"unknown key {short(key)} in {source}{hint}")


def make_config(values: dict, source: str = "config") -> RunConfig:
    """Build a RunConfig from a mapping, checking key names and types."""
    checked = {}
    for key, value in values.items():
        if key not in FIELD_NAMES:
            raise unknown_key(key, source)
        checked[key] = _coerce(key, value)
    return RunConfig(**checked)


def to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def replace(config: RunConfig, **changes: Any) -> RunConfig:
    return dataclasses.replace(config, **changes)


