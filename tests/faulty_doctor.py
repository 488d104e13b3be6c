"""The doctor with rank ``FAULT_RANK`` broken on purpose, for the doctor's tests:
``python tests/faulty_doctor.py [doctor args]`` under any launcher. On that rank only:
``FAULT_ENV="NAME=value,..."`` overrides launcher variables (a wrong local rank, say),
``FAULT_DATA_DIR`` gives it another --data-dir, ``FAULT_VERSION`` patches
``mnist_hpc.__version__``. Every other rank runs the unmodified doctor.
"""

import os
import sys

import mnist_hpc
from mnist_hpc.doctor import cli
from mnist_hpc.job import layout

if layout.detect(os.environ).rank == int(os.environ.get("FAULT_RANK", "1")):
    for pair in filter(None, os.environ.get("FAULT_ENV", "").split(",")):
        name, _, value = pair.partition("=")
        os.environ[name] = value
    if os.environ.get("FAULT_DATA_DIR"):
        sys.argv += ["--data-dir", os.environ["FAULT_DATA_DIR"]]  # the last one wins
    if os.environ.get("FAULT_VERSION"):
        mnist_hpc.__version__ = os.environ["FAULT_VERSION"]

if __name__ == "__main__":
    cli.main_exit()
