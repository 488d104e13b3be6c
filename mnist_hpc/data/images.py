"""A folder of image files as MNIST-shaped digits, for ``python -m mnist_hpc.evaluate --images``.

Each PNG is converted to greyscale and, where it is not 28x28 already, resized to it: the
same uint8 (N, 28, 28) tensor a split holds, so it goes through the very input cast training
used (``dataset.to_input``). MNIST digits are light on a dark ground; ``invert`` turns a dark
digit on paper into that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..files import check_path

SUFFIXES = (".png",)
SIDE = 28


def image_files(folder: str | Path) -> list[Path]:
    """The PNG files directly in ``folder``, by name; refused when there are none (torch-free
    callers use this before torch loads)."""
    check_path(str(folder), "--images")
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"--images {root}: no such directory; give a folder of PNG files")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    if not found:
        raise UsageError(f"--images {root} holds no .png file; give a folder of PNG files "
                         f"(28x28 greyscale, or any size and colour: they are converted)")
    return found


def read_digits(paths: list[Path], invert: bool = False) -> torch.Tensor:
    """uint8 (N, 28, 28): each file as greyscale, resized to 28x28 where it is not."""
    from PIL import Image, UnidentifiedImageError

    digits = np.empty((len(paths), SIDE, SIDE), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                grey = image.convert("L")
                if grey.size != (SIDE, SIDE):
                    grey = grey.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
                digits[i] = np.asarray(grey, dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise UsageError(f"cannot read image {path} ({type(exc).__name__}: {exc}); "
                             f"replace it with a PNG file or remove it from the folder")
    if invert:
        digits = 255 - digits
    return torch.from_numpy(digits)
