"""The training step captured in CUDA graphs: forward, backward and optimizer step of one
batch shape recorded once, then replayed with one launch.

On a GPU this network's step is bound by Python and kernel launches below batch 2048, not by
arithmetic (docs/performance.md), so replaying a graph is what lets the GPU run at its pace.
A graph replays fixed memory: the batch is copied into static buffers, the learning rate is a
device tensor the schedule fills in place (a capturable Adam/AdamW reads it there), and each
batch shape (the full batch, a ragged last one) gets its own graph. The whole-network recipe
is PyTorch's ("CUDA Graphs", torch.cuda.graph): warm-up iterations on a side stream, then
capture with the gradients set to None so that backward allocates them in the graph's pool.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config.options import RunConfig
from ..data.batches import Batch
from ..errors import UsageError
from ..job.layout import DistEnv
from .dropout import set_sample_keys
from .engine import Precision
from .warmup import preserved

CAPTURABLE = ("adam", "adamw")  # SGD has no capturable mode: its step reads lr on the host


def graphs_problem(device_type: str, optimizer: str, world_size: int,
                   backend: Optional[str]) -> Optional[str]:
    """Why the step cannot be captured here, or None."""
    if device_type != "cuda":
        return "CUDA graphs need --device cuda"
    if optimizer not in CAPTURABLE:
        return (f"CUDA graphs need a capturable optimizer ({' or '.join(CAPTURABLE)}), "
                f"not {optimizer}")
    if world_size > 1 and backend == "gloo":
        return "CUDA graphs cannot capture gloo's all-reduce, which runs on the host"
    return None


def use_graphs(setting: str, device_type: str, optimizer: str, world_size: int,
               backend: Optional[str], compile: bool) -> bool:
    """Whether the training step runs as CUDA graphs. ``auto`` turns them on only where a test
    compares them with the eager step: one process on one GPU, without torch.compile. Capture
    under DDP (NCCL) stays opt-in (``on``) until it has run on a multi-GPU node."""
    if setting == "off":
        return False
    problem = graphs_problem(device_type, optimizer, world_size, backend)
    if problem is not None:
        if setting == "on":
            raise UsageError(f"{problem}; use --cuda-graphs auto or off")
        return False
    return setting == "on" or (world_size == 1 and not compile)


def wanted(config: RunConfig, env: DistEnv, device: torch.device) -> bool:
    return use_graphs(config.cuda_graphs, device.type, config.optimizer, env.world_size,
                      env.backend, config.compile)


def _portable_state(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """Checkpoints keep a plain float lr and capturable off, so that they resume anywhere
    (a graphed run converts them again; an eager or CPU run takes them as they are)."""
    for group in state_dict["param_groups"]:
        group["lr"] = float(group["lr"])
        group["capturable"] = False
    return state_dict


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Adam/AdamW in capturable mode: lr and the step counts as device tensors. The schedule
    then writes each step's lr into the tensor in place (LRScheduler fills tensor lrs), which
    the captured step reads: one-cycle works inside the graph."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
        group["capturable"] = True
    for state in optimizer.state.values():  # resumed: the counts were loaded on the host
        if "step" in state:
            state["step"] = state["step"].to(device)
    optimizer.register_state_dict_post_hook(_portable_state)


class GraphedStep:
    """Called as ``step(batch)`` in place of the eager step (see
    ``engine.train_one_epoch``); the scheduler steps outside, after each replay.

    Capturing runs a few real steps (on a side stream) and is state-neutral: weights, optimizer
    state and RNG are put back afterwards (``warmup.preserved``), so a shape first met mid-run
    costs time, never a different result.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 world_size: int, precision: Precision, device: torch.device):
        make_capturable(optimizer, device)
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.world_size, self.precision, self.device = world_size, precision, device
        # DDP needs 11 eager iterations before capture (PyTorch's CUDA graphs notes)
        self.warmup_iterations = 11 if world_size > 1 else 3
        self.graphs: dict = {}  # (input shape, global size) -> (graph, its static batch)

    def __call__(self, batch: Batch) -> None:
        key = (tuple(batch.inputs.shape), batch.global_size)
        if key not in self.graphs:
            self.graphs[key] = self._capture(batch)
        graph, static = self.graphs[key]
        for into, values in zip((static.inputs, static.labels, static.keys),
                                (batch.inputs, batch.labels, batch.keys)):
            into.copy_(values)
        set_sample_keys(self.model, static.keys)  # the graph's dropout reads these
        graph.replay()

    def _step(self, inputs: torch.Tensor, labels: torch.Tensor, scale: float) -> None:
        """The eager step's arithmetic (engine.train_one_epoch), with autocast's cache off:
        a cached cast would outlive the capture (PyTorch's notes on graphs and autocast)."""
        with self.precision.autocast(self.device, cache=False):
            outputs = self.model(inputs)
        loss = self.loss_fn(outputs.float(), labels) * scale
        loss.backward()
        self.optimizer.step()

    def _capture(self, batch: Batch) -> tuple:
        static = Batch(batch.inputs.clone(), batch.labels.clone(), batch.global_size,
                       batch.keys.clone())
        set_sample_keys(self.model, static.keys)
        scale = self.world_size / batch.global_size  # fixed per graph: the size is in the key
        graph = torch.cuda.CUDAGraph()
        # the loss module's running state (the step log's sum) is put back with the weights
        with preserved(nn.ModuleList([self.model, self.loss_fn]), self.optimizer, self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(self.warmup_iterations):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._step(static.inputs, static.labels, scale)
            torch.cuda.current_stream().wait_stream(side)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self._step(static.inputs, static.labels, scale)
        return graph, static
