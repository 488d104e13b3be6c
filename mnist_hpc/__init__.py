"""mnist_hpc: MNIST CNNs trained with DistributedDataParallel, from a laptop to a supercomputer.

Importing the package has no side effects: no process group, no MPI, no CUDA, not even torch.
"""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(run_dir):
    """The trained network of a completed run (its ``model.pt``) as an ``nn.Module`` on the
    CPU, in eval mode. Its input is a float batch (B, 1, 28, 28) scaled as the run trained
    (``[0, 1]``, or standardised where the run used ``--normalize``). Raises ``UsageError``
    naming the file and the fix when the run has no readable model."""
    from .run.model_file import load_model as load  # torch loads here, not on import

    return load(run_dir)
