"""Cheap re-evaluation of inactive candidates for the arch gradient.

The memory-light estimator needs ⟨∂L/∂y, o_j(x)⟩ for every candidate j that did not run.
These outputs are never differentiated, so they are computed with plain functional calls
under `no_grad`, activations in place, and BatchNorm running statistics left untouched
(an arch step must not drift the statistics of ops that were not trained).

What makes it cheap (each measured in benchmarks/supernet_cost.py or by A/B timing):

* channels_last (NHWC) activations: oneDNN's depthwise and 1×1 convolutions run about 2×
  faster than in NCHW on CPU (one CIFAR layer, 6 candidates, 2 threads: 308 → 151 ms).
* The 1×1 expand conv's BatchNorm is folded into the conv, even in train mode: the batch
  statistics of ``z = W x`` are ``mean = W μ_x`` and ``var = diag(W Σ_x Wᵀ)``, where μ_x, Σ_x
  (Cin × Cin, cheap) are shared by every candidate of the layer. The widest tensor of the
  block is then written once by a conv with bias and clamped in place.
* Convolutions go through `ops.conv2d`: oneDNN on CPU also for 1×1 convs on small batches
  at one thread, where `F.conv2d` would take a ~2× slower kernel.
* Candidates run one at a time: fusing those that share a kernel size was slower on CPU
  (the project conv then reads a channel slice, which oneDNN copies).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ConvBNAct, MBConv, conv2d

Stats = tuple[torch.Tensor, torch.Tensor]


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm in the module's own mode (batch stats in train mode), without stat updates."""
    if bn.training:
        return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def nhwc_flat(t: torch.Tensor) -> torch.Tensor:
    """A 4-d tensor flattened in NHWC order: a view for channels_last tensors."""
    return t.permute(0, 2, 3, 1).reshape(-1)


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """⟨a, b⟩ of two 4-d tensors; no copy when both are channels_last (`flatten` would copy)."""
    if a.is_contiguous(memory_format=torch.channels_last) and b.is_contiguous(
        memory_format=torch.channels_last
    ):
        return torch.vdot(nhwc_flat(a), nhwc_flat(b).to(a.dtype))
    return torch.vdot(a.reshape(-1), b.reshape(-1).to(a.dtype))


def _input_stats(x: torch.Tensor) -> Stats:
    """Per-channel mean and (biased) covariance of a channels_last x over batch and space."""
    flat = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    mean = flat.mean(0)
    centred = flat - mean
    return mean, (centred.T @ centred) / flat.shape[0]


def _expand(x: torch.Tensor, block: ConvBNAct, stats: Stats | None) -> torch.Tensor:
    """1×1 conv-BN-ReLU6 as one conv with the BN folded in (see module doc)."""
    conv, bn = block[0], block[1]
    weight = conv.weight.flatten(1)  # type: ignore[union-attr]
    if bn.training:
        assert stats is not None
        mean_x, cov_x = stats
        mean = weight @ mean_x
        var = ((weight @ cov_x) * weight).sum(1)
    else:
        mean, var = bn.running_mean, bn.running_var  # type: ignore[assignment]
    scale = bn.weight * torch.rsqrt(var + bn.eps)  # type: ignore[operator]
    y = conv2d(x, (weight * scale[:, None])[:, :, None, None], bn.bias - mean * scale)
    return y.clamp_(0.0, 6.0)


def _conv_bn(x: torch.Tensor, block: ConvBNAct, act: bool) -> torch.Tensor:
    conv: nn.Conv2d = block[0]  # type: ignore[assignment]
    y = _bn(conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.groups), block[1])
    return y.clamp_(0.0, 6.0) if act else y


def _output(op: MBConv, x: torch.Tensor, stats: Stats | None) -> torch.Tensor:
    h = x if op.expand_conv is None else _expand(x, op.expand_conv, stats)
    return _conv_bn(_conv_bn(h, op.depthwise, act=True), op.project, act=False)


def inner_products(ops: Sequence[MBConv], x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """⟨grad, op(x)⟩ for each op, no autograd; one candidate's activations alive at a time."""
    out = torch.zeros(len(ops), dtype=torch.float32, device=x.device)
    with torch.no_grad():
        x = x.contiguous(memory_format=torch.channels_last)
        g = nhwc_flat(grad.contiguous(memory_format=torch.channels_last))
        train = any(op.expand_conv is not None and op.expand_conv[1].training for op in ops)
        stats = _input_stats(x) if train else None
        for i, op in enumerate(ops):
            out[i] = torch.vdot(g, nhwc_flat(_output(op, x, stats)).to(g.dtype))
    return out
