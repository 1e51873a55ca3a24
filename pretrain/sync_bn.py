"""Cross-rank BatchNorm for CPU (gloo) runs.

SimSiam normalises with statistics of the whole global batch (SyncBN, as the
official code). ``torch.nn.SyncBatchNorm`` is GPU-only, so CPU/gloo runs -- and the
tests that check "2 processes == 1 process with the whole batch" -- use this
module: per-channel sums are all-reduced with the differentiable
``torch.distributed.nn.all_reduce``, whose backward sums the gradients of the
shared statistics over ranks, exactly like the GPU implementation.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn import all_reduce as differentiable_all_reduce

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm"]


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the union of all ranks' batches (any input NxCx...)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (NxC...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([x.numel() / c], dtype=torch.float32)
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])  # 2C+1
        total = differentiable_all_reduce(local)
        n = total[-1]
        mean = total[:c] / n  # C
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)  # biased variance, C
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(f * mean.detach())
                self.running_var.mul_(1 - f).add_(f * var.detach() * n / (n - 1).clamp_min(1))
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d by ``CPUSyncBatchNorm`` with the same parameters and buffers."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        new = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        if module.affine:
            new.weight.requires_grad_(module.weight.requires_grad)
            new.bias.requires_grad_(module.bias.requires_grad)
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module
