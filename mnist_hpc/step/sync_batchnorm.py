"""BatchNorm over the global batch under DDP (``--sync-bn``).

PyTorch's ``nn.SyncBatchNorm`` does this on GPUs only (its statistics kernels are CUDA's; on a
CPU it raises), and this suite trains on CPUs over gloo too. ``GlobalBatchNorm2d`` computes
per-channel sums, counts and sums of squares, all-reduces them with an all-reduce that autograd
sees through (its backward all-reduces the gradients, as SyncBatchNorm's does), and
normalises with the global mean and variance: W ranks x B/W images take the step of one
process on B. One all-reduce of 2C + 1 numbers per layer forward, one backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the sum of every rank's gradient: each rank's
    loss depends on every rank's input through the shared statistics. (torch's own,
    torch.distributed.nn.functional.all_reduce, warns that it is deprecated.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every rank's batch; the same parameters
    and buffers (checkpoints move freely between the two). Eval mode is plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        # statistics in fp32 even under autocast: bf16 sums of 10^5 values lose digits
        x32 = x.float()
        count = torch.full((1,), x32.numel() / x32.shape[1], device=x.device)
        sums = torch.cat([x32.sum((0, 2, 3)), (x32 * x32).sum((0, 2, 3)), count])
        sums = _SumOverRanks.apply(sums)
        channels = x32.shape[1]
        n = sums[-1]
        mean = sums[:channels] / n
        var = sums[channels:2 * channels] / n - mean * mean  # biased, as BatchNorm normalises
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum  # None: a cumulative average, as BatchNorm's
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), momentum)  # unbiased, as BN
        scale = self.weight * torch.rsqrt(var + self.eps)
        y = (x32 - mean[None, :, None, None]) * scale[None, :, None, None] \
            + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert(module: nn.Module) -> nn.Module:
    """``module``, changed in place: every BatchNorm2d becomes a GlobalBatchNorm2d holding
    copies of its parameters and buffers. Convert before building the optimizer."""
    return _replace(module, nn.BatchNorm2d, GlobalBatchNorm2d)


def to_local(module: nn.Module) -> nn.Module:
    """``module``, changed in place: every GlobalBatchNorm2d back to a plain BatchNorm2d,
    which issues no collective, for work that one rank does alone (counting FLOPs): a
    collective on one rank would pair with another collective on the others."""
    return _replace(module, GlobalBatchNorm2d, nn.BatchNorm2d)


def _replace(module: nn.Module, old: type, new: type) -> nn.Module:
    for name, child in module.named_children():
        if type(child) is old:
            replacement = new(child.num_features, child.eps, child.momentum, child.affine,
                              child.track_running_stats)
            replacement.load_state_dict(child.state_dict())
            replacement.to(child.weight.device)
            setattr(module, name, replacement)
        else:
            _replace(child, old, new)
    return module
