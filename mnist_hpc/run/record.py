"""The run's record of its config (``config.yaml``, metrics.json's ``config``) and
``--print-config``: the choices behind every ``auto``, made by the same functions a run makes
them with (``job.process_group``, ``step.graphs``), put into the config by
``config.resolve``; and metrics.json as the run starts (``first_metrics``)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..config.options import RunConfig
from ..config.resolve import resolved
from ..data.batches import BatchPlan
from ..job import process_group
from ..job.layout import DistEnv
from ..step import graphs
from ..step.models import count_parameters
from ..step.recipe import Recipe
from ..step.verify import AutoCheck
from . import metrics_json, rundir
from .metrics_json import RUNNING, SCHEMA


def resolve(config: RunConfig, env: DistEnv, device: torch.device, run_id: Optional[str],
            cuda_graphs: Optional[bool] = None) -> RunConfig:
    """``config`` as this rank runs it on ``device`` in ``env`` (its process group's backend,
    if any; else the one several ranks would use). ``cuda_graphs``: whether the run's step is
    graphed, where the run has decided (auto may have fallen back: step.verify)."""
    backend = env.backend or process_group.pick_backend(config.backend, device)
    if cuda_graphs is None:
        cuda_graphs = graphs.wanted(config, env, device)
    return resolved(config, device_type=device.type, backend=backend, cuda_graphs=cuda_graphs,
                    run_id=run_id)


def preview(config: RunConfig, job: DistEnv) -> RunConfig:
    """What a run started here would resolve ``config`` to, without starting it: no process
    group and no run directory, so the run id stays as given."""
    device = process_group.pick_device(config.device, job)
    backend = process_group.pick_backend(config.backend, device)  # refuses nccl without CUDA
    env = dataclasses.replace(job, device=str(device),
                              backend=backend if job.distributed else None)
    return resolve(config, env, device, config.run_id)


def first_metrics(config: RunConfig, env: DistEnv, device: torch.device, plan: BatchPlan,
                  recipe: Recipe, cuda_graphs: bool, hostnames: list[str],
                  flops_per_sample: Optional[float], run_id: str,
                  auto_check: Optional[AutoCheck] = None) -> metrics_json.Metrics:
    """metrics.json as the run starts (its schema: mnist_hpc.run.metrics_json); ``config``
    is the resolved one, as config.yaml records it. ``auto_check``: the verdict on the path
    auto chose (step.verify), where there was one."""
    metrics = metrics_json.Metrics(
        schema=SCHEMA, run_id=run_id, status=RUNNING, config=config.to_dict(),
        model=metrics_json.Model(
            name=config.model, parameters=count_parameters(recipe.raw_model),
            flops_per_sample=flops_per_sample),
        world=metrics_json.World(
            world_size=env.world_size, nodes=len(set(hostnames)),
            local_world_size=env.local_world_size, launcher=env.launcher, backend=env.backend,
            device=str(device),
            device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            cpu_threads=torch.get_num_threads(), hostnames=hostnames, job_id=env.job_id,
            master_addr=env.master_addr),
        batch=metrics_json.Batch({
            "global": plan.global_batch, "per_rank": plan.global_batch / env.world_size,
            "mode": config.batch_mode, "steps_per_epoch": plan.steps_per_epoch, "lr": recipe.lr,
            "precision": "bf16" if recipe.precision.dtype else "fp32",
            "cuda_graphs": cuda_graphs}),
        # final: {} until the run completes; versions: only rank 0 writes, only it asks
        samples=metrics_json.Samples(), epochs=[], final={}, resumed_from=[],  # type: ignore[typeddict-item]
        versions=rundir.versions() if env.is_main else {},  # type: ignore[typeddict-item]
    )
    if auto_check is not None:
        metrics["auto_check"] = auto_check  # type: ignore[typeddict-item]
    return metrics
