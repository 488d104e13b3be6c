"""Dropout whose masks do not depend on the number of ranks.

``nn.Dropout`` draws from each rank's generator, so the mask a sample gets depends on which
rank holds it and where in that rank's slice it sits: N ranks cannot take one process's
steps, and a checkpoint could resume only at the world size that wrote it. ``KeyedDropout``
makes each mask a function of the sample's key (``seeds.sample_keys``: the run's seed, the
epoch and the sample's index in the training split), the layer and the element alone. The
batches carry the keys; ``set_sample_keys`` hands them to every layer before the forward.

The mask is a counter-based hash, drawn in bytes: one 32-bit hash (murmur3's finaliser) gives
the keep-or-drop of four elements, each kept when its byte is at least ``p * 256``. So ``p``
must be a multiple of 1/256 (the networks' 0.25 and 0.5 are). On a 2-core CPU this draws the
seed network's masks in about half the time of ``nn.Dropout``'s Bernoulli draws
(docs/performance.md).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import nn

LEVELS = 256  # a keep-or-drop per byte of hash
_GOLDEN64 = 0x9E3779B97F4A7C15 - 2**64  # the constants as signed int64 / int32 (torch's types)
_MIX64 = (0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64)  # splitmix64's finaliser
_MIX32 = (0x85EBCA6B - 2**32, 0xC2B2AE35 - 2**32)  # murmur3's finaliser


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping arithmetic; logical shifts by masking)."""
    x = x ^ ((x >> 30) & (2**34 - 1))
    x = x * _MIX64[0]
    x = x ^ ((x >> 27) & (2**37 - 1))
    x = x * _MIX64[1]
    return x ^ ((x >> 31) & (2**33 - 1))


def _mix32_(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser, in place on int32."""
    x ^= (x >> 16) & 0xFFFF
    x *= _MIX32[0]
    x ^= (x >> 13) & 0x7FFFF
    x *= _MIX32[1]
    x ^= (x >> 16) & 0xFFFF
    return x


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    """The low 32 bits of int64 values as int32 (two's complement, exactly)."""
    return ((x & 0xFFFFFFFF) - 2**31).to(torch.int32)


# Outside any compiled graph: Inductor (torch 2.11, CUDA) folded the constant into an int32
# index. torch._disable_dynamo is torch.compiler.disable imported at the first call, as
# torch.optim does: importing torch._dynamo up front costs every process about 1 s.
@torch._disable_dynamo
@functools.lru_cache(maxsize=None)
def _group_offsets(groups: int, device: torch.device) -> torch.Tensor:
    """Each group's own random offset (int32), so that two samples' hash inputs never run in
    step: the same for every batch, so made once per size and device, outside any graph."""
    return _to_int32(_mix64(torch.arange(groups, dtype=torch.int64, device=device) + _GOLDEN64))


def keep_mask(keys: torch.Tensor, layer: int, shape: torch.Size, p: float) -> torch.Tensor:
    """bool (B, *shape[1:]): which elements sample b (key ``keys[b]``) keeps in ``layer``."""
    features = shape[1:].numel()
    groups = -(-features // 4)  # one 32-bit hash per four elements
    sample = _to_int32(_mix64(keys.to(torch.int64) + layer * _GOLDEN64))
    hashes = _mix32_(sample[:, None] + _group_offsets(groups, keys.device))
    levels = hashes.view(torch.uint8)[:, :features]
    return (levels >= round(p * LEVELS)).view(shape)


class KeyedDropout(nn.Dropout):
    """``nn.Dropout`` with masks keyed per sample (see the module's docstring); the same
    expectation (kept values scaled by 1 / (1 - p)), nothing in the state dict."""

    def __init__(self, p: float, layer: int) -> None:
        super().__init__(p)
        if (p * LEVELS) % 1:
            raise ValueError(f"keyed dropout draws in steps of 1/{LEVELS}; p={p} is not one")
        self.layer = layer
        self.sample_keys: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keys = self.sample_keys
        if keys is None or len(keys) != len(x):
            raise RuntimeError(f"keyed dropout needs the batch's {len(x)} sample keys "
                               f"(dropout.set_sample_keys) before a training forward")
        scale = 1.0 / (1.0 - self.p)  # a Python number: no host-to-device copy in a graph
        return x * keep_mask(keys, self.layer, x.shape, self.p).to(x.dtype).mul_(scale)


def keyed(model: nn.Module) -> nn.Module:
    """``model`` with each ``nn.Dropout`` replaced by a ``KeyedDropout`` of the same p, the
    layers numbered in order so that each draws its own masks."""
    layers = [(parent, name, child) for parent in model.modules()
              for name, child in parent.named_children() if type(child) is nn.Dropout]
    for layer, (parent, name, child) in enumerate(layers):
        setattr(parent, name, KeyedDropout(child.p, layer))
    return model


def set_sample_keys(model: nn.Module, keys: Optional[torch.Tensor]) -> None:
    """The keys of the batch the next forward takes, for every keyed dropout layer."""
    for module in model.modules():
        if isinstance(module, KeyedDropout):
            module.sample_keys = keys
