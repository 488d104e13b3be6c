"""A completed run's model evaluated again, the torch side of ``python -m mnist_hpc.evaluate``:
on the MNIST test split with the trainer's exact evaluation (every rank a shard, the sums
all-reduced), or on a folder of images, one prediction each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..config.options import RunConfig
from ..data import dataset, images
from ..job import process_group
from ..job.layout import DistEnv
from ..step import engine
from ..step.models import probabilities
from .model_file import SavedModel, load


def test_split(saved: SavedModel, env: DistEnv, data_dir: str, limit: Optional[int],
               download: bool, batch_size: Optional[int]) -> engine.EvalResult:
    """Loss and accuracy on the test split (its first ``limit`` images, as a run trained with
    that ``--limit`` evaluated it), fed as the run fed it. Every rank calls this."""
    split = process_group.agree(env, lambda: dataset.load_test_split(data_dir, limit, download))
    device = torch.device(env.device)
    size = batch_size or saved.eval_batch_size
    size = RunConfig(eval_batch_size=size).eval_batch_for(device.type)  # the trainer's default
    return engine.evaluate(saved.model, split.to(device),
                           dataset.shard_range(len(split), env.rank, env.world_size), env,
                           saved.precision, size)


@torch.inference_mode()
def predict(saved: SavedModel, paths: list[Path], invert: bool) -> list[tuple[int, float]]:
    """(digit, probability) for each image file, fed as the run fed its training images."""
    digits = images.read_digits(paths, invert)
    inputs = dataset.to_input(digits, saved.precision.normalize, saved.precision.channels_last)
    chosen = probabilities(saved.model, inputs).max(dim=1)
    return list(zip(chosen.indices.tolist(), chosen.values.tolist()))


def evaluate_run(run_dir: str, env: DistEnv, data_dir: str, limit: Optional[int],
                 download: bool, batch_size: Optional[int]) -> Optional[engine.EvalResult]:
    """The test-split evaluation on every rank; the result on rank 0, None elsewhere."""
    saved = process_group.agree(env, lambda: load(run_dir, env.device))
    result = test_split(saved, env, data_dir, limit, download, batch_size)
    return result if env.is_main else None


def predict_images(run_dir: str, paths: list[Path], invert: bool) -> list[tuple[int, float]]:
    """One process, on the CPU: a folder of digits is small."""
    return predict(load(run_dir), paths, invert)
