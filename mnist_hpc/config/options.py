"""RunConfig: everything a run depends on, each option declared once (``option``: type,
default, help, choices, recipe or not), validated, and the checks that build one from a mapping
(a YAML file's, the command line's: ``mnist_hpc.config.flags``). CHOICES, RECIPE_FIELDS and the
flags are read back from the declarations, never listed a second time.

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


from ..errors import UsageError
from ..files import REPO_DIR, check_name, short
from .declare import declaration, option, parse_walltime

MAX_TIMEOUT = 7 * 24 * 3600  # a collective waiting longer has hung; larger overflows timedelta


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on, one ``option`` each (``mnist_hpc.config.declare``): the
    flag, its help and the recipe hash come from it. Defaults are the `default` preset's."""

    # --- the recipe (the notebook's, unless a preset says otherwise) ---
    model: str = option("cnn", "network: seed is the notebook's (softmax output), cnn the same "
                        "net giving logits, small the fast preset's 215k-weight CNN",
                        recipe=True, choices=("seed", "cnn", "small", "resnet", "vit"))
    optimizer: str = option("adam", "optimizer (the notebook uses Adam)", recipe=True,
                            choices=("adam", "adamw", "sgd"))
    lr: float = option(0.003, "learning rate; the default preset's is the measured best of "
                       "0.001, 0.003, 0.01 (docs/recipes.md)", recipe=True)
    betas: tuple = option((0.9, 0.999), "Adam's betas, as B1,B2; the fast preset lowers them",
                          recipe=True)
    weight_decay: float = option(0.0, "weight decay of the optimizer", recipe=True)
    momentum: float = option(0.9, "momentum (sgd only)", recipe=True)
    schedule: str = option("constant", "learning-rate schedule; onecycle: linear warm-up, then "
                           "linear decay", recipe=True, choices=("constant", "onecycle"))
    warmup_fraction: float = option(0.2, "share of the steps spent warming up (onecycle only)",
                                    recipe=True)
    label_smoothing: float = option(0.0, "label smoothing of the loss", recipe=True)
    batch_size: int = option(512, "training batch size (the notebook's; global unless "
                             "--batch-mode per-rank)", recipe=True)
    batch_mode: str = option("global", "global: the batch is split over ranks (strong scaling); "
                             "per-rank: each rank takes a whole batch (weak scaling)",
                             recipe=True, choices=("global", "per-rank"))
    scale_lr: bool = option(False, "multiply lr by the world size (linear scaling rule; only "
                            "when asked, never silently)", recipe=True)
    epochs: int = option(3, "number of epochs", recipe=False)
    train_metrics: str = option("eval", "the history's train figures: eval, the notebook's "
                                "eval-mode pass over the train split after each epoch; pass, "
                                "the loss and accuracy summed while training (the running "
                                "model, no second pass)", recipe=False,
                                choices=("eval", "pass"))
    shuffle: bool = option(True, "reshuffle the training split every epoch; the notebook never "
                           "shuffles, the seed preset turns this off", recipe=True)
    seed: int = option(0, "seed for model init, dropout and shuffling (the split uses "
                       "split_seed)", recipe=True)
    split_seed: int = option(55, "seed of the 80/20 train/validation split (the notebook's "
                             "torch.Generator().manual_seed(55))", recipe=True)
    dropout: bool = option(True, "keep the network's dropout layers; --no-dropout zeroes "
                           "them, to compare 1 rank with N exactly", recipe=True)
    normalize: bool = option(False, "standardise inputs with MNIST mean/std; off: the "
                             "notebook's [0, 1]", recipe=True)
    limit: Optional[int] = option(None, "keep only the first N images of each split (smoke "
                                  "tests)", recipe=True)
    augment: str = option("none", "training-image augmentation on the device, per sample from "
                          "(seed, epoch, index); shift: up to 2 px each way; affine: shift + "
                          "small rotation and scale", recipe=True,
                          choices=("none", "shift", "affine"))
    sync_bn: bool = option(False, "BatchNorm statistics over the global batch under DDP "
                           "(ResNet only; off: per-rank statistics, no extra collective per "
                           "layer)", recipe=True)
    # --- data and output ---
    data_dir: str = option(str(REPO_DIR / "data"), "directory holding MNIST/raw/*.gz "
                           "(torchvision's layout)", recipe=False)
    download: bool = option(False, "let torchvision download missing MNIST files",
                            recipe=False)
    results_dir: str = option(str(REPO_DIR / "results"), "where run directories are created",
                              recipe=False)
    run_id: Optional[str] = option(None, "name of the run directory; unset: time + random "
                                   "suffix (unique per second)", recipe=False)
    # --- hardware and speed ---
    device: str = option("auto", "auto: cuda if present, else mps (one process), else cpu",
                         recipe=False, choices=("auto", "cpu", "cuda", "mps"))
    backend: str = option("auto", "process-group backend; auto: nccl on cuda, gloo otherwise",
                          recipe=False, choices=("auto", "gloo", "nccl"))
    loader: str = option("device", "device: data resident on the device; torchvision: the "
                         "notebook's DataLoader", recipe=False, choices=("device", "torchvision"))
    precision: str = option("auto", "auto: bf16 with CUDA graphs (where it pays), fp32 "
                            "elsewhere", recipe=True, choices=("auto", "fp32", "bf16"))
    channels_last: bool = option(True, "channels_last memory format: faster convolutions on "
                                 "CPU and GPU, same numbers", recipe=True)
    compile: bool = option(False, "torch.compile the model (pays a one-time compile)", recipe=False)
    cuda_graphs: str = option("auto", "capture the training step in CUDA graphs; auto: on for "
                              "one process on one GPU", recipe=False,
                              choices=("auto", "on", "off"))
    deterministic: bool = option(False, "deterministic algorithms, so a seed repeats its run on "
                                 "a GPU", recipe=False)
    # measured: fp32 evaluation on a CPU runs about 2x faster at 128 than at 2048
    eval_batch_size: Optional[int] = option(None, "batch size of evaluation passes; unset: 2048 "
                                            "on CUDA, 128 on CPU; counts never depend on it",
                                            recipe=False)
    bucket_cap_mb: float = option(25.0, "DDP gradient bucket size in MB (PyTorch's default)",
                                  recipe=True)
    static_graph: bool = option(False, "DDP static_graph; only helps some models",
                                recipe=True)
    # --- reliability ---
    timeout: float = option(300.0, "seconds a collective may wait before every rank gives up",
                            recipe=False)
    checkpoint_every: Optional[int] = option(None, "write a checkpoint every N epochs; unset: 1 "
                                             "when epochs > 1, else none", recipe=False)
    resume: Optional[str] = option(None, "RUN_DIR, latest, or auto (resume --run-id if it has a "
                                   "checkpoint)", recipe=False)
    resume_force: bool = option(False, "resume even if the checkpoint's recipe differs",
                                recipe=False)
    time_limit: Optional[float] = option(None, "stop cleanly with a checkpoint before this wall "
                                         "time (seconds or H:MM:SS)", recipe=False,
                                         parse=parse_walltime)
    stop_check_every: int = option(10, "steps between the collective checks for a stop "
                                   "request", recipe=False)
    # --- seeing inside a run (docs/observability.md) ---
    # 1.2 lets ordinary jitter pass and catches a slow GPU, a throttled node or a noisy neighbour
    straggler_threshold: float = option(1.2, "name a rank a straggler when its compute time "
                                        "exceeds this multiple of the ranks' median",
                                        recipe=False)
    log_every: Optional[int] = option(None, "write a steps.jsonl line (and TensorBoard scalars, "
                                      "if installed) every N steps", recipe=False)
    rank_logs: bool = option(False, "also write every rank's output to <run>/ranks/rank-N.log",
                             recipe=False)
    plots: bool = option(True, "draw loss.png and accuracy.png after each epoch (matplotlib); "
                         "--no-plots for many short runs, or where matplotlib would first "
                         "build its font cache on a slow file system", recipe=False)
    profile: Optional[int] = option(None, "record N steps of the second epoch with "
                                    "torch.profiler", recipe=False)
    profile_ranks: str = option("0", "which ranks record the profile; 0: rank 0 only (one "
                                "trace)", recipe=False, choices=("0", "all"))

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

    def global_batch(self, world_size: int) -> int:
        """The samples of one step over all ranks: the batch split over them, or (per-rank
        mode) a whole batch each."""
        return self.batch_size * (world_size if self.batch_mode == "per-rank" else 1)

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
        recipe = {k: v for k, v in self.to_dict().items() if k in RECIPE_FIELDS}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


FIELD_TYPES = get_type_hints(RunConfig)
FIELD_NAMES = [f.name for f in fields(RunConfig)]
DECLARATIONS = {f.name: declaration(f) for f in fields(RunConfig)}
CHOICES = {name: d.choices for name, d in DECLARATIONS.items() if d.choices}
RECIPE_FIELDS = frozenset(name for name, d in DECLARATIONS.items() if d.recipe)
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


def replace(config: RunConfig, **changes: Any) -> RunConfig:
    return dataclasses.replace(config, **changes)


