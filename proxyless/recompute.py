"""Cheap re-evaluation of inactive candidates for the arch gradient.

The memory-light estimator needs ⟨∂L/∂y, o_j(x)⟩ for every candidate j that did not run.
These outputs are never differentiated, so they are computed with plain functional calls
under `no_grad`, activations in place, and BatchNorm running statistics left untouched
(an arch step must not drift the statistics of ops that were not trained).
Candidates that share the input and kernel size are fused: their 1×1 expand convs become
one convolution and their depthwise convs one grouped convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .ops import ConvBNAct, MBConv


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d | list[nn.BatchNorm2d]) -> torch.Tensor:
    """BatchNorm in the module's own mode (batch stats in train mode), without stat updates."""
    bns = bn if isinstance(bn, list) else [bn]
    weight = torch.cat([b.weight for b in bns]) if len(bns) > 1 else bns[0].weight
    bias = torch.cat([b.bias for b in bns]) if len(bns) > 1 else bns[0].bias
    if bns[0].training:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, bns[0].eps)
    mean = torch.cat([b.running_mean for b in bns])  # type: ignore[misc]
    var = torch.cat([b.running_var for b in bns])  # type: ignore[misc]
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, bns[0].eps)


def _conv(x: torch.Tensor, blocks: list[ConvBNAct], act: bool) -> torch.Tensor:
    """Run several parallel conv-BN(-act) blocks as one conv (weights concatenated on output)."""
    conv: nn.Conv2d = blocks[0][0]  # type: ignore[assignment]
    weight = torch.cat([b[0].weight for b in blocks]) if len(blocks) > 1 else conv.weight
    groups = weight.shape[0] if conv.groups > 1 else 1  # depthwise stays depthwise
    y = F.conv2d(x, weight, None, conv.stride, conv.padding, 1, groups)
    y = _bn(y, [b[1] for b in blocks])  # type: ignore[misc]
    return y.clamp_(0.0, 6.0) if act else y


def mbconv_outputs(ops: Sequence[MBConv], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of several MBConvs on the same input, fused by kernel size, no autograd."""
    outputs: dict[int, torch.Tensor] = {}
    groups: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        groups.setdefault(op.kernel, []).append(i)
    with torch.no_grad():
        for members in groups.values():
            mbs = [ops[i] for i in members]
            expanding = [m for m in mbs if m.expand_conv is not None]
            if len(expanding) == len(mbs):
                h = _conv(x, [m.expand_conv for m in mbs], act=True)  # type: ignore[misc]
            else:  # expand=1 candidates have no expand conv: fall back to one at a time
                for i in members:
                    outputs[i] = mbconv_outputs_single(ops[i], x)
                continue
            d = _conv(h, [m.depthwise for m in mbs], act=True)
            del h
            start = 0
            for i, m in zip(members, mbs, strict=True):
                width = m.depthwise[0].out_channels
                outputs[i] = _conv(d[:, start : start + width], [m.project], act=False)
                start += width
    return [outputs[i] for i in range(len(ops))]


def mbconv_outputs_single(op: MBConv, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        h = x if op.expand_conv is None else _conv(x, [op.expand_conv], act=True)
        h = _conv(h, [op.depthwise], act=True)
        return _conv(h, [op.project], act=False)
