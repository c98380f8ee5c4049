"""Cheap re-evaluation of inactive candidates for the arch gradient.

The memory-light estimator needs ⟨∂L/∂y, o_j(x)⟩ for every candidate j that did not run.
These outputs are never differentiated, so they are computed with plain functional calls
under `no_grad`, activations in place, and BatchNorm running statistics left untouched
(an arch step must not drift the statistics of ops that were not trained).

Where the time goes and what is done about it (measured in benchmarks/supernet_cost.py):

* The 1×1 expand conv's BatchNorm is folded into the conv, even in train mode: the batch
  statistics of ``z = W x`` are ``mean = W μ_x`` and ``var = diag(W Σ_x Wᵀ)``, where μ_x, Σ_x
  (Cin × Cin, cheap) are shared by every candidate of the layer. The widest tensor of the
  block is then written once by a conv with bias and clamped in place, instead of conv →
  stats pass → normalise pass → clamp pass.
* Candidates run one at a time (``FUSE = "none"``). Fusing those that share a kernel size
  (one expand conv, one grouped depthwise conv) was measured slower on CPU: the project conv
  then reads a channel slice, which mkldnn copies, and the wide fused tensors fall out of
  cache. Running the 1×1 convs as batched matmuls on slice views (no copy) was slower still.
  Measured on the ImageNet space, 1 thread, CPU time, median of 5 paired rounds, relative to
  the previous kernel-fused code: one at a time 0.81, + folded expand BN 0.63.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ConvBNAct, MBConv

# Knobs for A/B measurements; the defaults are the measured best (see the module doc).
FOLD_EXPAND_BN = True
FUSE = "none"  # "kernel": fuse candidates sharing a kernel size; "none": one at a time


def _bn(x: torch.Tensor, bns: Sequence[nn.BatchNorm2d]) -> torch.Tensor:
    """BatchNorm in the module's own mode (batch stats in train mode), without stat updates."""
    weight = torch.cat([b.weight for b in bns]) if len(bns) > 1 else bns[0].weight
    bias = torch.cat([b.bias for b in bns]) if len(bns) > 1 else bns[0].bias
    if bns[0].training:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, bns[0].eps)
    mean = torch.cat([b.running_mean for b in bns])  # type: ignore[misc]
    var = torch.cat([b.running_var for b in bns])  # type: ignore[misc]
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, bns[0].eps)


def _input_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) covariance of x over batch and space."""
    c = x.shape[1]
    flat = x.transpose(0, 1).reshape(c, -1)
    mean = flat.mean(1)
    centred = flat - mean[:, None]
    return mean, (centred @ centred.T) / flat.shape[1]


def _conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.conv2d(x, weight[:, :, None, None], bias)


def _expand(
    x: torch.Tensor, blocks: list[ConvBNAct], stats: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    """Parallel 1×1 conv-BN-ReLU6 blocks as one conv with the BN folded in (see module doc)."""
    weight = torch.cat([b[0].weight for b in blocks]).flatten(1)  # type: ignore[union-attr]
    bns: list[nn.BatchNorm2d] = [b[1] for b in blocks]  # type: ignore[misc]
    if not FOLD_EXPAND_BN:
        y = _conv1x1(x, weight, None)
        return _bn(y, bns).clamp_(0.0, 6.0)
    gamma = torch.cat([b.weight for b in bns])
    beta = torch.cat([b.bias for b in bns])
    if bns[0].training:
        assert stats is not None
        mean_x, cov_x = stats
        mean = weight @ mean_x
        var = ((weight @ cov_x) * weight).sum(1)
    else:
        mean = torch.cat([b.running_mean for b in bns])  # type: ignore[misc]
        var = torch.cat([b.running_var for b in bns])  # type: ignore[misc]
    scale = gamma * torch.rsqrt(var + bns[0].eps)
    y = _conv1x1(x, weight * scale[:, None], beta - mean * scale)
    return y.clamp_(0.0, 6.0)


def _depthwise(h: torch.Tensor, blocks: list[ConvBNAct]) -> torch.Tensor:
    conv: nn.Conv2d = blocks[0][0]  # type: ignore[assignment]
    weight = torch.cat([b[0].weight for b in blocks]) if len(blocks) > 1 else conv.weight
    y = F.conv2d(h, weight, None, conv.stride, conv.padding, 1, weight.shape[0])
    return _bn(y, [b[1] for b in blocks]).clamp_(0.0, 6.0)  # type: ignore[misc]


def _project(d: torch.Tensor, block: ConvBNAct) -> torch.Tensor:
    y = _conv1x1(d, block[0].weight.flatten(1), None)  # type: ignore[union-attr]
    return _bn(y, [block[1]])  # type: ignore[list-item]


def _group_outputs(
    mbs: list[MBConv], x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None
) -> list[torch.Tensor]:
    """Outputs of MBConvs that share input and kernel size; all expand (expand > 1)."""
    h = _expand(x, [m.expand_conv for m in mbs], stats)  # type: ignore[misc]
    d = _depthwise(h, [m.depthwise for m in mbs])
    del h
    outs, start = [], 0
    for m in mbs:
        width = m.depthwise[0].out_channels
        outs.append(_project(d[:, start : start + width], m.project))
        start += width
    return outs


def mbconv_outputs(ops: Sequence[MBConv], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of several MBConvs on the same input, no autograd; input statistics shared."""
    outputs: dict[int, torch.Tensor] = {}
    groups: dict[object, list[int]] = {}
    for i, op in enumerate(ops):
        if op.expand_conv is None:
            groups[("single", i)] = [i]
        else:
            groups.setdefault(op.kernel if FUSE == "kernel" else i, []).append(i)
    with torch.no_grad():
        needs_stats = FOLD_EXPAND_BN and any(
            op.expand_conv is not None and op.expand_conv[1].training for op in ops
        )
        stats = _input_stats(x) if needs_stats else None
        for members in groups.values():
            if ops[members[0]].expand_conv is None:
                outputs[members[0]] = mbconv_outputs_single(ops[members[0]], x)
                continue
            outs = _group_outputs([ops[i] for i in members], x, stats)
            outputs.update(zip(members, outs, strict=True))
    return [outputs[i] for i in range(len(ops))]


def mbconv_outputs_single(op: MBConv, x: torch.Tensor) -> torch.Tensor:
    """One MBConv's output, no autograd."""
    with torch.no_grad():
        if op.expand_conv is None:
            h = x
        else:
            train = FOLD_EXPAND_BN and op.expand_conv[1].training
            h = _expand(x, [op.expand_conv], _input_stats(x) if train else None)
        return _project(_depthwise(h, [op.depthwise]), op.project)
