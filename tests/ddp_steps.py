"""Weights after every optimizer step, for the DDP equivalence test.

    python tests/ddp_steps.py OUT_DIR                             # plain and engine, 1 process
    torchrun --nproc_per_node 2 tests/ddp_steps.py OUT_DIR        # engine under DDP, 2 ranks

Every run takes the same global batches of one shuffled epoch of ``N`` training images:
256, 256 and a last batch of 3, which two ranks split 2 + 1, so a per-rank mean (instead of
the engine's sum scaled by world size / global size) would weigh the lone sample of rank 1
twice as much. ``plain`` is the reference: the mean cross-entropy of the whole global batch,
written without the package's engine or data sharding. ``engine`` wraps the model in DDP as
train.py does (gradient bucket views and the timed all-reduce hook on gloo) and feeds
``train_one_epoch`` this rank's slices from ``batches.epoch_batches``. Networks come from
``recipe.build``: the cnn, and the ResNet with and without ``sync_bn`` (its BatchNorm only
matches one process when its statistics span both ranks). Each rank saves its snapshots to
``OUT_DIR/{mode}-{case}-{optimizer}-w{world size}-rank{rank}.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mnist_hpc import train
from mnist_hpc.config.options import RunConfig, make_config
from mnist_hpc.data import dataset
from mnist_hpc.data.batches import BatchPlan, epoch_batches
from mnist_hpc.errors import EXIT_OK
from mnist_hpc.job import layout, process_group
from mnist_hpc.observe.comm_timer import CommTimer, timed_allreduce_hook
from mnist_hpc.step import engine, recipe

N = 515  # 2 x 256 + 3
GLOBAL_BATCH = 256
SEED = 0
OPTIMIZERS = {
    # SGD without momentum: the update is the gradient itself, so a wrong scale shows at once
    "sgd": lambda params: torch.optim.SGD(params, lr=0.5),
    # Adam, the trainer's default (it hides a constant scale, not a wrong weighting)
    "adam": lambda params: torch.optim.Adam(params, lr=1e-3),
    # the ResNet at lr 0.5 leaves the stable region within two steps, where float noise grows
    # tenfold per step and would drown what the comparison looks at
    "sgd-bn": lambda params: torch.optim.SGD(params, lr=0.05),
}
# case -> (model, sync_bn, optimizers): the ResNet's cases check BatchNorm, which SGD shows
CASES = {"cnn": ("cnn", False, ("sgd", "adam")),
         "resnet-syncbn": ("resnet", True, ("sgd-bn",)),
         "resnet": ("resnet", False, ("sgd-bn",))}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def plain(split: dataset.Split, optimizer: torch.optim.Optimizer, model: nn.Module) -> list:
    snapshots = []
    order = BatchPlan(N, GLOBAL_BATCH, seed=SEED).order(0)  # the same global batches, unsharded
    for start in range(0, N, GLOBAL_BATCH):
        index = order[start:start + GLOBAL_BATCH]
        inputs = split.images[index].unsqueeze(1).float() / 255
        loss = nn.functional.cross_entropy(model(inputs), split.labels[index])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        snapshots.append(snapshot(model))
    return snapshots


def with_engine(split: dataset.Split, optimizer: torch.optim.Optimizer, model: nn.Module,
                env: layout.DistEnv) -> list:
    snapshots = []
    wrapped: nn.Module = model
    if env.distributed:
        wrapped = DDP(model, gradient_as_bucket_view=True)
        wrapped.register_comm_hook(CommTimer(), timed_allreduce_hook)
    plan = BatchPlan(N, GLOBAL_BATCH, env.rank, env.world_size, SEED)
    precision = engine.Precision()
    batches = epoch_batches(split, plan, 0)
    engine.train_one_epoch(wrapped, batches, optimizer, nn.CrossEntropyLoss(reduction="sum"),
                           env.world_size, precision, on_step=lambda step: snapshots.append(
                               snapshot(model)))
    return snapshots


def main(out_dir: Path) -> None:
    split = dataset.load_splits(RunConfig().data_dir, limit=N).train
    assert len(split) == N
    with process_group.session(device="cpu", backend="gloo", timeout_s=60) as env:
        modes = ("engine",) if env.distributed else ("plain", "engine")
        for mode in modes:
            for case, (model_name, sync_bn, optimizers) in CASES.items():
                config = make_config({"model": model_name, "sync_bn": sync_bn, "seed": SEED,
                                      "dropout": False, "channels_last": False})
                for name in optimizers:
                    model = recipe.build(config, torch.device("cpu"), 3,
                                         env.world_size).raw_model
                    optimizer = OPTIMIZERS[name](model.parameters())
                    if mode == "plain":
                        snapshots = plain(split, optimizer, model)
                    else:
                        snapshots = with_engine(split, optimizer, model, env)
                    torch.save(snapshots, out_dir / f"{mode}-{case}-{name}-w{env.world_size}"
                                                    f"-rank{env.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    # as the trainer leaves: without the interpreter's shutdown, whose c10d destructors can
    # abort and which costs up to 1 s of CPU with torch loaded
    train.leave(EXIT_OK)
