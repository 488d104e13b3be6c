"""The config as it ran: every ``auto`` replaced by what it chose and the run's id filled in,
for ``config.yaml``, metrics.json's ``config`` and ``--print-config``. Given back as
``--config``, the record starts the same run again.

Torch-free: the choices that need torch (the device, the backend, CUDA graphs) are made in
``job.process_group`` and ``step.graphs`` and passed in; the precision's rule lives here.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import yaml

from .options import RunConfig


def precision_ran(requested: str, graphs: bool) -> str:
    """``auto``: bf16 only where it was measured to pay, a CUDA-graphed step; fp32 elsewhere
    (``step.recipe.precision_for`` says why)."""
    if requested == "auto":
        return "bf16" if graphs else "fp32"
    return requested


def resolved(config: RunConfig, *, device_type: str, backend: str, cuda_graphs: bool,
             run_id: Optional[str]) -> RunConfig:
    """``config`` with what the run chose. The run id is recorded unless the run continues one
    named by ``--resume RUN_DIR`` or ``latest``, which a run id may not be given with."""
    keeps_name = config.resume in (None, "auto")
    return dataclasses.replace(
        config, device=device_type, backend=backend,
        precision=precision_ran(config.precision, cuda_graphs),
        cuda_graphs="on" if cuda_graphs else "off",
        run_id=run_id if keeps_name else config.run_id)


def steps_taken(config: RunConfig, world_size: int) -> RunConfig:
    """The recipe as ``world_size`` ranks step it: the global batch and the learning rate they
    use, written as one process's. Ranks draw nothing of their own (seeds, step.dropout), so
    two world sizes with the same steps are one recipe: 2 ranks of --batch-mode per-rank 256
    take the steps of 1 rank of 512."""
    scale = world_size if config.scale_lr else 1
    return dataclasses.replace(config, batch_size=config.global_batch(world_size),
                               batch_mode="global", lr=config.lr * scale, scale_lr=False)


def recipe_hashes(config: RunConfig, cuda_graphs: bool, world_size: int = 1) -> frozenset[str]:
    """The recipe hashes a checkpoint of this run at ``world_size`` may carry
    (``checkpoint_hash`` of the run that wrote it). ``auto`` and the precision it chose here
    are one recipe: a run resumes whether it is started again with its own command line
    (``--precision auto``, as checkpoints record it) or with its config.yaml (the precision
    written out)."""
    config = steps_taken(config, world_size)
    ran = precision_ran(config.precision, cuda_graphs)
    if ran != precision_ran("auto", cuda_graphs):
        return frozenset({config.recipe_hash()})
    return frozenset(dataclasses.replace(config, precision=p).recipe_hash() for p in ("auto", ran))


def checkpoint_hash(config: RunConfig, world_size: int) -> str:
    """The recipe hash a checkpoint written at ``world_size`` carries: that of the steps
    taken, so that any world size taking the same steps resumes it."""
    return steps_taken(config, world_size).recipe_hash()


def record_yaml(config: RunConfig, world_size: int) -> str:
    """The resolved config as YAML, headed by what it is and the batch each rank takes (a
    comment: loading the file back reads the options alone)."""
    batch = config.global_batch(world_size)
    return (f"# the resolved config: every auto replaced by what was chosen; give it back "
            f"with --config\n"
            f"# batch per rank: {batch / world_size:g} (global batch {batch} over {world_size} "
            f"rank{'s' * (world_size != 1)})\n"
            + yaml.safe_dump(config.to_dict(), sort_keys=False))
