"""mnist_hpc: MNIST CNNs trained with DistributedDataParallel, from a laptop to a supercomputer.

Importing the package has no side effects: no process group, no MPI, no CUDA.
"""

__version__ = "0.1.0"
