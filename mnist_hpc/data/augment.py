"""Augmentation of training images on the device, a whole batch at once.

Each sample's transform is a function of (seed, epoch, its index in the training split)
alone: one generator per epoch draws the parameters of every sample of the split, and a batch
picks its rows by index. So the same image gets the same transform at 1 rank or N, and a
resumed run repeats the transforms of the run it resumes. Output stays uint8 (B, 28, 28),
as torchvision's transforms on PIL images give, so ``data.to_input`` follows unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn import functional as F

from .. import seeds

SIZE = 28  # MNIST images are SIZE x SIZE
MAX_SHIFT = 2  # pixels: most digits fit a centred 20x20 box, so +-2 px keeps them whole
MAX_DEGREES = 10.0  # affine: small rotations keep a 6 a 6 and a 9 a 9
MAX_SCALE = 0.1  # affine: +-10 % size, the spread of MNIST writers' digit sizes


@dataclass(frozen=True)
class EpochTransforms:
    """One epoch's transforms: an affine matrix per sample of the split (output pixel ->
    input pixel, in grid_sample's [-1, 1] coordinates), on the training device."""

    theta: torch.Tensor  # (n, 2, 3) float32
    mode: str  # grid_sample interpolation: nearest keeps whole-pixel shifts exact

    def apply(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 28, 28) images at split positions ``index`` -> transformed uint8 images;
        pixels moved in from outside the image are background (0)."""
        x = images.unsqueeze(1).float()
        theta = self.theta[index]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode=self.mode, padding_mode="zeros", align_corners=False)
        return out.squeeze(1).round_().clamp_(0, 255).to(torch.uint8)


def for_epoch(mode: str, seed: int, split_seed: int, epoch: int, n: int,
              device: torch.device) -> Optional[EpochTransforms]:
    """The transforms of every sample of an ``n``-image split in one epoch (None: mode
    ``none``). Drawn on the CPU, whatever the device, so every device draws the same."""
    if mode == "none":
        return None
    generator = seeds.generator("augment", seed, split_seed, epoch)
    pixel = 2.0 / SIZE  # one pixel in grid_sample's [-1, 1] coordinates
    if mode == "shift":
        shifts = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (n, 2), generator=generator).float()
        angle, scale = torch.zeros(n), torch.ones(n)
    else:
        shifts = (torch.rand(n, 2, generator=generator) * 2 - 1) * MAX_SHIFT
        angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(MAX_DEGREES)
        scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * MAX_SCALE
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, -shifts[:, 0] * pixel], 1),
                         torch.stack([sin, cos, -shifts[:, 1] * pixel], 1)], 1)
    return EpochTransforms(theta.to(device), "nearest" if mode == "shift" else "bilinear")
