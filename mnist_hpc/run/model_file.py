"""``model.pt``: the trained network a completed run leaves, and the one way to load it.

Weights only: the unwrapped model's ``state_dict`` on the CPU, the network's name and its
constructor arguments, and how the run fed it (input scaling and layout, precision,
evaluation batch size), so that evaluating it again gives the run's own numbers. Plain
tensors and containers, loadable with ``torch.load(path, weights_only=True)``: loading never
runs code. Rank 0 writes it after the test evaluation, atomically, before the run is marked
completed.
"""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ..config.options import RunConfig
from ..errors import UsageError
from ..files import atomic_write
from ..step.engine import Precision
from ..step.models import MODELS
from .rundir import MODEL, model_path

FORMAT = 1
_FIX = "give the directory of a completed run, or train one"


def constructor_args(name: str) -> dict:
    """The arguments ``models.build_model`` builds ``name`` with: its constructor's defaults."""
    return {p.name: p.default for p in inspect.signature(MODELS[name]).parameters.values()
            if p.default is not inspect.Parameter.empty}


def save(run_dir: Path, model: nn.Module, config: RunConfig, precision: Precision) -> Path:
    """Write ``run_dir/model.pt`` from the unwrapped (never DDP- or compile-wrapped) model."""
    payload = {
        "format": FORMAT, "model": config.model, "args": constructor_args(config.model),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "normalize": precision.normalize, "channels_last": precision.channels_last,
        "precision": "bf16" if precision.dtype is not None else "fp32",
        "eval_batch_size": config.eval_batch_size,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path = Path(run_dir) / MODEL
    atomic_write(path, buffer.getvalue())
    return path


@dataclass(frozen=True)
class SavedModel:
    """A loaded model.pt: the network in eval mode and how the run fed it."""

    model: nn.Module
    name: str
    precision: Precision
    eval_batch_size: Optional[int]  # None: the trainer's per-device default


def _reason(exc: Exception) -> str:
    """Why torch could not read a file, in a few words. Torch's own advice for a file its
    weights-only reader refuses (load it with weights_only=False) would run the file's code:
    it is not passed on, and a model.pt of ours never needs it."""
    text = " ".join(str(exc).split())
    if "weights only" in text.lower() or "weights_only" in text:
        return "torch's weights-only reader refused it"
    return text.split(". ")[0][:100] or "the file ends early"


def _read(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file fails in many ways (zip, pickle, storage, ...)
        raise UsageError(f"cannot read {path} ({type(exc).__name__}: {_reason(exc)}); it is "
                         f"damaged or not a model.pt: copy it again from the run, or retrain")
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT
            and payload.get("model") in MODELS and isinstance(payload.get("args"), dict)
            and isinstance(payload.get("state_dict"), dict)):
        raise UsageError(f"{path} is not a mnist_hpc model.pt of format {FORMAT}; {_FIX}")
    return payload


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> SavedModel:
    """The run's network with its trained weights, in eval mode, on ``device``."""
    path = model_path(run_dir)
    payload = _read(path)
    try:
        model = MODELS[payload["model"]](**payload["args"])
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"{path} does not fit the network {payload['model']!r} "
                         f"({type(exc).__name__}: {first_line}); {_FIX}")
    channels_last = bool(payload.get("channels_last", False))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(torch.device(device), memory_format=memory_format).eval()
    precision = Precision(dtype=torch.bfloat16 if payload.get("precision") == "bf16" else None,
                          channels_last=channels_last,
                          normalize=bool(payload.get("normalize", False)))
    return SavedModel(model, payload["model"], precision, payload.get("eval_batch_size"))


def load_model(run_dir: str | Path) -> nn.Module:
    """``mnist_hpc.load_model``: the run's trained network, on the CPU, in eval mode. Its
    input is what the run trained on: see ``SavedModel.precision`` (``load``)."""
    return load(run_dir).model
