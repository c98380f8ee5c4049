"""Candidate ops and the fixed parts of the network. Blocks never see op strings.

The residual connection lives in `Block` (and in the supernet's mixed layer), not in the op,
so that Zero means "skip the block" and an op's output is what the arch gradient needs.
"""

from __future__ import annotations

import torch
from torch import nn

from .space import OpSpec, SearchSpace


class ConvBNAct(nn.Sequential):
    """Conv → BatchNorm → (ReLU6). 'Same' padding for odd kernels."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        )
        if act:
            self.append(nn.ReLU6(inplace=True))


class MBConv(nn.Module):
    """Inverted residual body: 1×1 expand (skipped when expand=1), k×k depthwise, 1×1 project."""

    def __init__(self, cin: int, cout: int, kernel: int, expand: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.kernel, self.expand, self.stride = kernel, expand, stride
        self.expand_conv = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand_conv is not None:
            x = self.expand_conv(x)
        return self.project(self.depthwise(x))


class Zero(nn.Module):
    """The 'skip' candidate: contributes nothing, so a residual layer becomes the identity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(()).expand_as(x)


def build_op(spec: OpSpec, cin: int, cout: int, stride: int) -> nn.Module:
    """The one builder from an op spec to a module."""
    if spec.is_zero:
        if stride != 1 or cin != cout:
            raise ValueError(f"zero op needs stride 1 and in == out channels, got {cin}->{cout}")
        return Zero()
    if spec.kind == "mb":
        return MBConv(cin, cout, spec.kernel, spec.expand, stride)
    raise ValueError(f"unknown op kind {spec.kind!r}")


class Block(nn.Module):
    """A chosen op plus its residual connection where shapes allow."""

    def __init__(self, op: nn.Module, residual: bool) -> None:
        super().__init__()
        self.op, self.residual = op, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op(x)
        return x + y if self.residual else y


class Head(nn.Module):
    """1×1 conv to the head width, global pool, dropout, classifier."""

    def __init__(self, cin: int, width: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = ConvBNAct(cin, width, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(x)).flatten(1)
        return self.classifier(self.dropout(x))


def build_fixed_parts(space: SearchSpace) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Stem, first block (MBConv k3 e1, no skip unless shapes match) and head of a space."""
    stem = ConvBNAct(space.in_channels, space.stem_channels, 3, space.stem_stride)
    first = Block(
        MBConv(space.stem_channels, space.first_channels, 3, 1, 1),
        residual=space.stem_channels == space.first_channels,
    )
    head = Head(space.last_channels, space.head_channels, space.num_classes, space.dropout)
    return stem, first, head
