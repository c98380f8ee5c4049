"""The network's modules. Blocks never see op strings; `proxyless.plan` builds them from keys.

The residual connection lives in `Block` (and in the supernet's mixed layer), not in the op,
so that Zero means "skip the block" and an op's output is what the arch gradient needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
) -> torch.Tensor:
    """`F.conv2d` (dilation 1), with channels_last float32 calls on CPU sent to oneDNN.

    oneDNN is one of the kernels `F.conv2d` chooses between itself, by a rule tuned on NCHW:
    for a 1×1 conv on fewer than 16 images with one thread it takes its native im2col + GEMM
    kernel, which copies a channels_last input and is ~2× slower there (ImageNet space at
    batch 8: the arch step's largest cost; `benchmarks/supernet_cost.py`). Same kernels in
    the backward, so gradients are bit-identical. Traced, exported or compiled calls, other
    dtypes and autocast keep `F.conv2d`.
    """
    if (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.onnx.is_in_onnx_export()
        and not torch.compiler.is_compiling()
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    ):
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, stride, (1, 1), groups)
    return F.conv2d(x, weight, bias, stride, padding, 1, groups)


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` that runs through `conv2d` (zero padding, dilation 1: all this net uses)."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        assert self.padding_mode == "zeros" and self.dilation == (1, 1)
        return conv2d(input, weight, bias, self.stride, self.padding, self.groups)  # type: ignore[arg-type]


class ConvBNAct(nn.Sequential):
    """Conv → BatchNorm → (ReLU6). 'Same' padding for odd kernels."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__(
            Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
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
