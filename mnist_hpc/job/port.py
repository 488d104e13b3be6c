"""The scheduler's job id and the rendezvous port derived from it: one formula for the
trainer (``layout.detect``) and the job templates (``python -m mnist_hpc.job port``).

Two jobs sharing a node must not both take 29500 (pytorch/pytorch#126510). The port counts
up with the job number, so jobs submitted close together never share one; the rest of the
id (array task, step, PBS server) moves it by a hash. The range stays below Linux's
ephemeral ports (32768-60999), which outgoing connections may hold. Torch-free.
"""

from __future__ import annotations

import re
import zlib
from typing import Mapping, Optional

FIRST_PORT = 20000
PORT_COUNT = 12768  # FIRST_PORT + PORT_COUNT = 32768, where the ephemeral ports begin


def job_id(environ: Mapping[str, str]) -> Optional[str]:
    """The scheduler's job id: PBS, else Slurm (with the array task, if any)."""
    if environ.get("PBS_JOBID"):
        return environ["PBS_JOBID"]
    if environ.get("SLURM_JOB_ID"):
        task = environ.get("SLURM_ARRAY_TASK_ID")
        return environ["SLURM_JOB_ID"] + (f"_{task}" if task else "")
    return None


def port_for(key: str) -> int:
    """The port of a job (and step) id such as ``12345.polaris-pbs-01`` or ``678_3.0``."""
    number, rest = re.match(r"(\d*)(.*)", key, re.DOTALL).groups()
    return FIRST_PORT + (int(number or 0) + zlib.crc32(rest.encode())) % PORT_COUNT


def job_port(environ: Mapping[str, str]) -> Optional[int]:
    """The port derived from this process's job id and Slurm step, or None outside a job."""
    key = job_id(environ)
    if key is None:
        return None
    return port_for(key + "." + environ.get("SLURM_STEP_ID", environ.get("SLURM_STEPID", "")))

