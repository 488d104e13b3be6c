"""How much arithmetic a training step does, and how much of the device's peak it reaches.

FLOPs per sample are counted once, with ``torch.utils.flop_counter.FlopCounterMode``, over
one forward and backward pass of a copy of the model (the copy keeps the run's weights, its
gradients and batch-norm statistics untouched). The counter sees matrix products and
convolutions, which is where this family of networks does its work; elementwise ops and the
optimizer are not counted, as in the usual MFU convention.

MFU = achieved FLOP/s / (peak FLOP/s per device x devices). Peaks are the vendors' dense
figures for the precision the run uses; a device not in ``PEAK_TFLOPS`` (and every CPU) gets
no MFU rather than a guessed one.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..step import sync_batchnorm
from ..step.dropout import set_sample_keys

# dense TFLOP/s per device, (bf16 tensor cores, fp32 without tensor cores), from the vendors'
# data sheets; matched against torch.cuda.get_device_name in this order (H100 PCIe before H100)
PEAK_TFLOPS = (
    ("GH200", (989.0, 67.0)),
    ("H200", (989.0, 67.0)),
    ("H100 PCIe", (756.0, 51.0)),
    ("H100 NVL", (835.0, 60.0)),
    ("H100", (989.0, 67.0)),
    ("A100", (312.0, 19.5)),
    ("L40S", (362.0, 91.6)),
    ("A40", (149.7, 37.4)),
    ("A10", (125.0, 31.2)),
    ("V100", (None, 15.7)),  # no bf16 on Volta
)


def flops_per_sample(model: nn.Module, inputs: torch.Tensor) -> float:
    """Training FLOPs (forward + backward) per sample of ``model`` on a batch like ``inputs``."""
    # the twin's BatchNorms keep their statistics local: only one rank counts
    twin = sync_batchnorm.to_local(copy.deepcopy(model)).train()
    set_sample_keys(twin, torch.arange(len(inputs), device=inputs.device))  # any keys: a count
    with FlopCounterMode(display=False) as counter:
        twin(inputs).float().sum().backward()
    return counter.get_total_flops() / len(inputs)


def peak_tflops(device_name: Optional[str], bf16: bool) -> Optional[float]:
    """The device's dense peak for the run's precision, or None when it is not known."""
    if not device_name:
        return None
    for key, (bf16_peak, fp32_peak) in PEAK_TFLOPS:
        if key in device_name:
            return bf16_peak if bf16 else fp32_peak
    return None


def efficiency(per_sample: float, samples: int, seconds: float, peak: Optional[float],
               devices: int) -> dict:
    """Achieved TFLOP/s over an epoch's training time and MFU (None without a known peak)."""
    achieved = per_sample * samples / seconds / 1e12
    return {"tflops": achieved, "mfu": achieved / (peak * devices) if peak else None}
