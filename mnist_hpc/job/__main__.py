"""``python -m mnist_hpc.job port``: the rendezvous port of the job this shell runs in, for
the job templates (jobs/common.sh), so that they and the trainer share one formula
(``port.job_port``). Torch-free; exit 2 outside a job."""

from __future__ import annotations

import os
import sys
from typing import Optional

from ..errors import EXIT_USAGE
from .port import job_port


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["port"]:
        print("usage: python -m mnist_hpc.job port  (the rendezvous port derived from the "
              "job id)", file=sys.stderr)
        return EXIT_USAGE
    port = job_port(os.environ)
    if port is None:
        print("mnist_hpc.job: error: no job id in the environment (PBS_JOBID or SLURM_JOB_ID): "
              "run this inside a PBS or Slurm job, or choose a port yourself", file=sys.stderr)
        return EXIT_USAGE
    print(port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
