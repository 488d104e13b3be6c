"""``auto`` verifies before it trusts. Where ``--cuda-graphs auto`` chose the CUDA-graphed step
(and with it ``--precision auto``'s bf16), the first batch is stepped twice from the same
state: through the chosen path and through the plain eager fp32 step, each inside
``warmup.preserved`` so that neither leaves a trace. The chosen path is trusted only if it
ran and its weight update points the way the plain one does; otherwise the run falls back to
the plain step, says why in one line and records it in metrics.json (``auto_check``).
``--cuda-graphs on`` is never checked: it fails loudly, as asked.

The test is the cosine of the two updates (every weight's change, as one vector) and the
ratio of their lengths. bf16 rounding moves both a little: on a 2-core CPU the first step of
each preset in bf16 against fp32 gives a cosine of 0.945 (the ResNet's AdamW) to 0.99 and
lengths within 0.1 %. A step that raises, gives NaN or updates other weights fails it.
"""

from __future__ import annotations

from typing import Callable, Optional, TypedDict

import torch
from torch import nn

from ..data.batches import Batch
from . import engine, graphs
from .recipe import Recipe
from .warmup import preserved

MIN_COSINE = 0.8
MAX_LENGTH_RATIO = 1.25  # either way


class AutoCheck(TypedDict):
    """metrics.json's ``auto_check``: what auto chose, whether it was trusted, and why not."""

    path: str  # what auto chose, e.g. "CUDA graphs, bf16"
    trusted: bool
    why: Optional[str]  # why it was not trusted (None when it was)
    update_cosine: Optional[float]
    update_length_ratio: Optional[float]


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
            step: Callable[[], object]) -> torch.Tensor:
    """The change of every weight that ``step`` makes, as one fp64 vector; nothing kept."""
    params = [p for p in model.parameters() if p.requires_grad]
    with preserved(model, optimizer, device):
        before = torch.cat([p.detach().flatten().double() for p in params])
        step()
        engine.synchronize(device)
        return torch.cat([p.detach().flatten().double() for p in params]) - before


def check(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
          batch: Batch, world_size: int, chosen: engine.Precision,
          graphed: Optional[Callable[[Batch], None]], device: torch.device) -> AutoCheck:
    """Step ``batch`` the chosen way (``chosen`` precision, ``graphed`` step) and the plain
    way (eager, fp32), both state-neutral; the verdict."""
    plain = engine.Precision(None, chosen.channels_last, chosen.normalize)

    def step(precision: engine.Precision, graphed_step) -> Callable[[], object]:
        return lambda: engine.train_one_epoch(model, [batch], optimizer, loss_fn, world_size,
                                              precision, graphed=graphed_step)

    try:
        candidate = _update(model, optimizer, device, step(chosen, graphed))
    except Exception as exc:  # whatever the capture or the replay raised
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return AutoCheck(path=path, trusted=False, update_cosine=None, update_length_ratio=None,
                         why=f"its first step failed ({type(exc).__name__}: {first_line})")
    reference = _update(model, optimizer, device, step(plain, None))
    cosine = float(torch.nn.functional.cosine_similarity(candidate, reference, dim=0))
    ratio = float(candidate.norm() / reference.norm())
    why = None
    if not (cosine >= MIN_COSINE and 1 / MAX_LENGTH_RATIO <= ratio <= MAX_LENGTH_RATIO):
        why = (f"its first step differs from the plain fp32 step's (update cosine {cosine:.3f}, "
               f"needs >= {MIN_COSINE}; length ratio {ratio:.3f}, needs within "
               f"{MAX_LENGTH_RATIO}x)")
    return AutoCheck(path=path, trusted=why is None, why=why, update_cosine=cosine,
                     update_length_ratio=ratio)


def check_graphs(model: nn.Module, recipe: Recipe, first: Batch, world_size: int,
                 device: torch.device) -> AutoCheck:
    """The first batch through the CUDA-graphed step (in the recipe's precision) and through
    the plain eager fp32 step; the verdict. ``graphs.GraphedStep`` is looked up at the call,
    so that the tests can put a failing or diverging step in its place."""
    path = "CUDA graphs" + (", bf16" if recipe.precision.dtype is not None else "")
    try:
        graphed = graphs.GraphedStep(model, recipe.optimizer, recipe.loss_fn, world_size,
                                     recipe.precision, device)
    except Exception as exc:
        return AutoCheck(path=path, trusted=False, update_cosine=None, update_length_ratio=None,
                         why=f"it could not be set up ({type(exc).__name__}: {exc})")
    return check(path, model, recipe.optimizer, recipe.loss_fn, first, world_size,
                 recipe.precision, graphed, device)
