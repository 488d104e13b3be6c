"""The trainer's entry point as it ends a failed run under an MPI launcher:
``python tests/end_job_train.py [trainer args]`` runs ``train.main`` and, on a runtime
failure (exit 1), calls ``watchdog.end_job_on_failure`` after the rank's error line, as the
entry point does, so that a stopped peer cannot keep mpiexec waiting."""

import os
import sys

from mnist_hpc import launcher, train, watchdog
from mnist_hpc.errors import EXIT_FAILURE

if __name__ == "__main__":
    code = train.main(keep_signal_handlers=True)
    if code == EXIT_FAILURE:
        watchdog.end_job_on_failure(launcher.detect(os.environ).launcher)
    sys.exit(code)
