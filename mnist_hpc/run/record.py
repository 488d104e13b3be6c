"""The run's record of its config (``config.yaml``, metrics.json's ``config``) and
``--print-config``: the choices behind every ``auto``, made by the same functions a run makes
them with (``job.process_group``, ``step.graphs``), put into the config by
``config.resolve``."""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..config.options import RunConfig
from ..config.resolve import resolved
from ..job import process_group
from ..job.layout import DistEnv
from ..step import graphs


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
