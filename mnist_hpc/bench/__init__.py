"""Benchmarks: the notebook's own loop against this package's paths, in one run on one machine.

``python -m mnist_hpc.bench`` measures, on the same device and the same data:

* **throughput** (``throughput``): training samples/s of the notebook's loop (``notebook``,
  the one faithful copy of it) and of this package's paths, one change at a time: its
  torchvision loader, device-resident data, channels_last, bf16 autocast, ``torch.compile``
  (and on CUDA, batches of 2048).
* **epochs** (``epochs``): the seed recipe's whole run, the notebook's loop against this
  package's ``--config seed`` path, as a wall-time ratio.
* **time to accuracy** (``accuracy``): the ``default`` and ``fast`` presets, run as train runs
  them (``package``), timed until test accuracy first reaches each target.
* **allocator** (``allocator``, only when asked for): whole CPU trainer processes with the
  environment's glibc thresholds against glibc's own, alternating.

A table goes to stdout and everything, with the machine and versions, to a JSON file
(``report``, ``machine``). ``cli`` (the command line) and ``names`` (what can be measured) are
torch-free; ``run`` makes the measurements.
"""

from .cli import main, main_exit

__all__ = ["main", "main_exit"]
