"""What the model tests share: a run's model.pt scored through ``mnist_hpc.load_model`` alone,
and the result line of ``python -m mnist_hpc.evaluate`` read back."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

RESULT = re.compile(r"^Test accuracy: (?P<accuracy>[\d.]+), test loss: (?P<loss>[\d.]+), "
                    r"samples: (?P<count>\d+) \((?P<correct>\d+) correct\)$", re.MULTILINE)


@dataclass(frozen=True)
class Score:
    correct: int
    count: int

    @property
    def accuracy(self) -> float:
        """Percent, computed as the trainer computes metrics.json's test_acc."""
        return 100.0 * float(self.correct) / self.count


def printed_score(output: str) -> tuple[Score, str]:
    """The evaluate command's counts and its accuracy as printed."""
    found = RESULT.search(output)
    assert found, output
    return Score(int(found["correct"]), int(found["count"])), found["accuracy"]


def api_score(run_dir: Path, limit: int, world_size: int = 1) -> Score:
    """The run's model through ``mnist_hpc.load_model`` on the first ``limit`` test images,
    cut as the trainer's evaluation cuts them (each rank's shard in batches of 128, its CPU
    default), so every image meets the same arithmetic and the count is comparable exactly."""
    import mnist_hpc
    from mnist_hpc.data import dataset, mnist_files

    model = mnist_hpc.load_model(run_dir)
    raw = mnist_files.load_raw(Path(__file__).resolve().parent.parent / "data")
    images, labels = raw["t10k-images-idx3-ubyte"][:limit], raw["t10k-labels-idx1-ubyte"][:limit]
    correct = 0
    with torch.inference_mode():
        for rank in range(world_size):
            shard = dataset.shard_range(limit, rank, world_size)
            for start in range(shard.start, shard.stop, 128):
                stop = min(start + 128, shard.stop)
                inputs = dataset.to_input(images[start:stop], channels_last=True)
                correct += int((model(inputs).argmax(1) == labels[start:stop]).sum())
    return Score(correct, limit)
