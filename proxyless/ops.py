"""The network's modules. Blocks never see op strings; `proxyless.plan` builds them from keys.

The residual connection lives in `Block` (and in the supernet's mixed layer), not in the op,
so that Zero means "skip the block" and an op's output is what the arch gradient needs.
"""

from __future__ import annotations

import torch
from torch import nn


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


class Block(nn.Module):
    """A chosen op plus its residual connection where shapes allow."""

    def __init__(self, op: nn.Module, residual: bool) -> None:
        super().__init__()
        self.op, self.residual = op, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op(x)
        return x + y if self.residual else y


class HeadConv(ConvBNAct):
    """The head's 1×1 conv, pooled and flattened: one timed unit (the classifier is another)."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__(cin, width, 1)
        self.extend([nn.AdaptiveAvgPool2d(1), nn.Flatten(1)])


class Head(nn.Module):
    """Head conv (pooled), dropout, classifier."""

    def __init__(self, conv: nn.Module, classifier: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = conv
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))
