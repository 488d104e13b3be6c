"""The torch side of the job: device binding, backend, the process group session and the
collectives (no-ops on one process). Who each rank is comes from ``launcher``.
"""

from __future__ import annotations

import glob
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

import torch
import torch.distributed as dist

from ..errors import UsageError, ranks_text
from .layout import DistEnv
from .watchdog import deadline, find_job

T = TypeVar("T")
DEADLINE_GRACE_S = 5.0
JOINED_PREFIX = "mnist_hpc/joined/"  # each rank's check-in with rank 0's store


def pick_device(requested: str, env: DistEnv, environ: Optional[Mapping[str, str]] = None,
                refuse_unseen_gpus: bool = True) -> torch.device:
    """cuda:local_rank modulo the visible GPUs (works with one GPU per rank via
    CUDA_VISIBLE_DEVICES and with all GPUs visible); set before the process group starts so
    each rank opens its context on its own GPU (pytorch/pytorch#135279). ``auto`` refuses the
    CPU where the process was given GPUs torch cannot see (the doctor reports it instead)."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif torch.backends.mps.is_available() and not env.distributed:
            requested = "mps"
        else:
            requested = "cpu"
            signs = unseen_gpus(environ) if refuse_unseen_gpus else []
            if signs:  # a GPU job on CPUs would run slowly, and silently
                raise UsageError(unseen_gpus_problem(signs))
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda but no CUDA device is visible; "
                             "use --device cpu or check CUDA_VISIBLE_DEVICES")
        index = env.local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps but MPS is not available; use --device cpu")
    if requested == "cpu":
        environ = os.environ if environ is None else environ
        threads = cpu_threads(env.local_world_size, environ)
        torch.set_num_threads(threads)
        crowded = oversubscribed(threads, env.local_world_size, len(os.sched_getaffinity(0)),
                                 os.cpu_count() or 1)
        if crowded and env.local_rank == 0:  # once per node
            print(f"warning: {crowded}", file=sys.stderr, flush=True)
    return torch.device(requested)


# the GPU lists schedulers and vendors' runtimes set for a process given GPUs
_GPU_LISTS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
              "ZE_AFFINITY_MASK", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")


def gpus_given(environ: Mapping[str, str], dev: str = "/dev") -> list[str]:
    """Signs that this process was given GPUs, whatever torch can see: NVIDIA's and AMD's
    device files, and the GPU lists a scheduler or a launcher set. Empty where none."""
    signs = []
    for pattern, vendor in (("nvidia[0-9]*", "NVIDIA"), ("kfd", "AMD")):
        found = sorted(glob.glob(os.path.join(dev, pattern)))
        if found:
            signs.append(f"{' '.join(found)} ({vendor})")
    for name in _GPU_LISTS:
        value = environ.get(name, "").strip()
        if value not in ("", "-1", "NoDevFiles"):
            signs.append(f"{name}={value}")
    if environ.get("SLURM_GPUS_ON_NODE", "0").strip() not in ("", "0"):
        signs.append(f"SLURM_GPUS_ON_NODE={environ['SLURM_GPUS_ON_NODE']}")
    return signs


def unseen_gpus(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """``gpus_given`` where torch sees no CUDA device: GPUs a CPU-only build, a driver it does
    not match or another vendor's runtime leaves unused."""
    if torch.cuda.is_available():
        return []
    return gpus_given(os.environ if environ is None else environ)


def unseen_gpus_problem(signs: list[str]) -> str:
    build = (f"built for CUDA {torch.version.cuda}" if torch.version.cuda
             else "a build without CUDA")
    return (f"--device auto: this process was given GPUs ({'; '.join(signs)}) but torch "
            f"{torch.__version__} ({build}) sees none; install a torch build for these GPUs "
            f"and their driver (nvidia-smi shows the driver's CUDA version), or pass --device "
            f"cpu to train on the CPU anyway")


def cpu_threads(local_world_size: int, environ: Mapping[str, str]) -> int:
    """Threads for a CPU rank. An explicit count wins: OMP_NUM_THREADS (torchrun sets 1 when
    it starts several ranks), else Slurm's --cpus-per-task. Otherwise split the cores this
    process may use among the node's local ranks, unless the launcher already bound the rank
    to a subset of cores (then use that subset whole)."""
    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if environ.get(name, "").isdigit() and int(environ[name]) > 0:
            return int(environ[name])
    allowed = len(os.sched_getaffinity(0))
    if allowed < (os.cpu_count() or allowed):
        return allowed
    return max(1, allowed // local_world_size)


def oversubscribed(threads: int, local_world_size: int, allowed: int,
                   cores: int) -> Optional[str]:
    """Why this node's ranks will slow each other down, or None: more threads than cores (an
    OMP_NUM_THREADS meant for one rank, say). A rank the launcher bound to its own cores
    (``allowed`` < ``cores``) is measured against those; else the node's ranks share them."""
    if allowed < cores:
        if threads <= allowed:
            return None
        return (f"{threads} threads on the {allowed} core(s) this rank is bound to: they "
                f"will slow each other down; set OMP_NUM_THREADS={allowed}")
    if threads * local_world_size <= allowed:
        return None
    fair = max(1, allowed // local_world_size)
    return (f"{local_world_size} rank(s) x {threads} threads on this node want "
            f"{threads * local_world_size} cores, and it has {allowed}: they will slow each "
            f"other down; set OMP_NUM_THREADS={fair} (or --cpus-per-task {fair})")


def pick_backend(requested: str, device: torch.device) -> str:
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise UsageError(f"--backend nccl needs CUDA devices, but this rank uses {device}; "
                         f"use --backend gloo")
    return requested


def sharing_problem(backend: str, local_world_size: int,
                    gpus_on_node: Optional[int]) -> Optional[str]:
    """Why NCCL cannot start here, or None: it refuses two ranks on one GPU ("invalid usage"),
    which is certain when a node runs more ranks than it has GPUs. The count is the node's
    (NVML), not this rank's visible ones: a launcher that shows each rank only its own GPU
    (Polaris' affinity script, Slurm's --gpus-per-task) is fine. Unknown count: no verdict."""
    if backend != "nccl" or gpus_on_node is None or local_world_size <= gpus_on_node:
        return None
    return (f"{local_world_size} ranks on this node share {gpus_on_node} GPU(s), and NCCL cannot "
            f"put two ranks on one GPU; start at most {gpus_on_node} rank(s) per node, or use "
            f"--backend gloo")


def gpus_on_node() -> Optional[int]:
    """The node's GPU count from NVML, whatever CUDA_VISIBLE_DEVICES shows; None if unknown."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NVML's own "can't initialize" warning
            count = torch.cuda._raw_device_count_nvml()
    except (OSError, AttributeError):  # no libnvidia-ml, or a torch without the helper
        return None
    return count if count >= 0 else None


@contextmanager
def session(device: str = "auto", backend: str = "auto", timeout_s: float = 300.0,
            environ: Optional[Mapping[str, str]] = None,
            job: Optional[DistEnv] = None, refuse_unseen_gpus: bool = True) -> Iterator[DistEnv]:
    """Detect, bind the device, start the process group with a timeout; always tear it down.
    ``job``: this process's place as ``watchdog.find_job`` found it already (the trainer
    finds it before torch loads); found here when not given.

    Every wait before training (the MPI broadcast of rank 0's address, the store connection
    and ``init_process_group``) ends within ``timeout_s``, or the process exits 1 with a line
    naming the wait; SIGTERM and SIGINT end it meanwhile (see ``watchdog.deadline``)."""
    environ = os.environ if environ is None else environ
    env = job if job is not None else find_job(environ, timeout_s)
    torch_device = pick_device(device, env, environ, refuse_unseen_gpus)
    env = replace(env, device=str(torch_device))
    chosen = pick_backend(backend, torch_device)  # refuses nccl without CUDA, even alone
    if env.distributed:
        env = replace(env, backend=chosen)
        problem = sharing_problem(env.backend, env.local_world_size,
                                  gpus_on_node() if torch_device.type == "cuda" else None)
        if problem is not None:  # every rank stops here, before NCCL's own, vaguer failure
            raise UsageError(problem)
        started = time.perf_counter()
        kwargs: dict[str, Any] = {}
        if torch_device.type == "cuda":
            kwargs["device_id"] = torch_device
        where = f"{env.master_addr}:{env.master_port}"
        # a few seconds past the process group's own timeout: where the store gives up by
        # itself (a peer that never came), its error names the wait; the deadline ends the
        # waits that never give up (a port that accepts and never answers)
        with deadline(timeout_s + DEADLINE_GRACE_S,
                      f"rank {env.rank}: rendezvous with {where} did not complete "
                                 f"within --timeout {timeout_s:g} s; check that every rank "
                                 f"started and that MASTER_ADDR:MASTER_PORT ({where}) is rank "
                                 f"0's host and a port no other program holds, or raise "
                                 f"--timeout", env.launcher):
            _init_process_group(env, timedelta(seconds=timeout_s),
                                environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True", **kwargs)
        env = replace(env, init_s=time.perf_counter() - started)
    try:
        yield env
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _init_process_group(env: DistEnv, timeout: timedelta, agent_store: bool,
                        **kwargs: Any) -> None:
    """Under torchrun the agents have held the rendezvous already (``agent_store``: env://
    joins their store). Elsewhere every rank checks in with rank 0's store and waits for all
    the others first, so that a rendezvous that never fills names the ranks that never came
    on every rank that did."""
    if agent_store:
        dist.init_process_group(env.backend, init_method="env://", rank=env.rank,
                                world_size=env.world_size, timeout=timeout, **kwargs)
        return
    store = dist.TCPStore(env.master_addr, env.master_port, env.world_size, env.rank == 0,
                          timeout, wait_for_workers=False)
    keys = [f"{JOINED_PREFIX}{rank}" for rank in range(env.world_size)]
    store.set(keys[env.rank], "1")
    try:
        store.wait(keys, timeout)
    except (RuntimeError, dist.DistError) as exc:
        missing = [rank for rank, key in enumerate(keys) if not store.check([key])]
        if missing:
            exc.__notes__ = [*getattr(exc, "__notes__", []),
                             f"{ranks_text(missing)} of {env.world_size} never joined"]
        raise
    dist.init_process_group(env.backend, store=store, rank=env.rank,
                            world_size=env.world_size, timeout=timeout, **kwargs)


# --- collectives that are no-ops on one process -------------------------------------------

def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    if not env.distributed:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(env: DistEnv, action: Callable[[], T]) -> T:
    """Run ``action`` on every rank; if it raised UsageError anywhere, raise the first such
    message on every rank, so all exit 2 together and rank 0 prints it once."""
    error, value = None, None
    try:
        value = action()
    except UsageError as exc:
        error = str(exc) if env.rank == 0 else f"rank {env.rank}: {exc}"
    errors = [e for e in all_gather_objects(error, env) if e is not None]
    if errors:
        raise UsageError(errors[0])
    return value


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on any rank (one tiny all-reduce)."""
    if not env.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0],
                         device=env.device if env.backend == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
