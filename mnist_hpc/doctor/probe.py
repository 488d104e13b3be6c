"""What one rank sees of its allocation: host, device, cores, threads, versions, data, and the
results directory. Every probe records a problem as text instead of raising, so a broken
rank still reaches the same collectives as the others and its problem gets reported."""

from __future__ import annotations

import os
import platform
import secrets
import socket
from pathlib import Path
from typing import Optional

import torch
import torch.distributed

from .. import files
from ..data import mnist_files
from ..errors import UsageError
from ..job.layout import DistEnv
from ..run import rundir


def device_facts(device: torch.device) -> dict:
    """Kind, name and identity of the device; on CUDA the UUID and PCI bus id tell physical
    GPUs apart (an index does not: every rank of a per-task binding sees "GPU 0")."""
    if device.type != "cuda":
        return {"kind": device.type, "name": device.type, "index": None, "uuid": None,
                "bus_id": None}
    props = torch.cuda.get_device_properties(device)
    uuid = getattr(props, "uuid", None)
    bus = None
    if hasattr(props, "pci_bus_id"):
        bus = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    return {"kind": "cuda", "name": props.name, "index": device.index,
            "uuid": f"GPU-{uuid}" if uuid is not None else None, "bus_id": bus}


def versions() -> dict:
    """The versions that must agree across ranks. Not torchvision: only --loader torchvision
    and --download use it, and importing it (as rundir.versions does) costs seconds."""
    import mnist_hpc  # read now, not at import: the installed package's own attribute

    nccl = None
    if torch.distributed.is_nccl_available() and torch.cuda.is_available():
        nccl = ".".join(str(part) for part in torch.cuda.nccl.version())
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "nccl": nccl, "mnist_hpc": mnist_hpc.__version__,
            "git_commit": rundir.git_commit()}


def data_problem(data_dir: str) -> Optional[str]:
    """The four MNIST files read and verified (magic, count, md5) as training reads them."""
    try:
        mnist_files.load_raw(data_dir)
    except UsageError as exc:
        return str(exc)
    return None


def rank_facts(env: DistEnv, data_dir: str) -> dict:
    device = torch.device(env.device)
    return {
        "rank": env.rank, "local_rank": env.local_rank,
        "local_world_size": env.local_world_size, "host": socket.gethostname(),
        "launcher": env.launcher, "device": device_facts(device),
        "visible_gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpus": sorted(os.sched_getaffinity(0)), "host_cpus": os.cpu_count(),
        "threads": torch.get_num_threads(), "versions": versions(),
        "data": data_problem(data_dir),
    }


# --- the results directory: rank 0 writes a marker, every rank must see it -----------------

def write_marker(results_dir: str) -> tuple[Optional[dict], Optional[str]]:
    """Rank 0: create the directory if needed and write a marker file holding a random token.
    Returns ({"path", "token"}, None) or (None, problem)."""
    root = Path(results_dir)
    token = secrets.token_hex(8)
    path = root / f".doctor-{token}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        files.atomic_write(path, token)
    except OSError as exc:
        return None, f"cannot write to {root} ({exc.strerror or exc})"
    return {"path": str(path), "token": token}, None


def read_marker(marker: Optional[dict], rank0_problem: Optional[str]) -> Optional[str]:
    """Every rank: the marker is there, with rank 0's token."""
    if marker is None:
        return f"rank 0 could not write the results directory: {rank0_problem}"
    path = Path(marker["path"])
    try:
        seen = path.read_text()
    except OSError:
        return f"does not see rank 0's file {path}: the results directory is not shared"
    if seen != marker["token"]:
        return f"sees another file at {path}: the results directory is not shared"
    return None


def remove_marker(marker: Optional[dict]) -> None:
    if marker is not None:
        Path(marker["path"]).unlink(missing_ok=True)
