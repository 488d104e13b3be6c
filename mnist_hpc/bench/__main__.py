"""``python -m mnist_hpc.bench``."""

from .cli import main_exit

main_exit()
