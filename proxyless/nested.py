"""Nested weight sharing: a layer's MBConv candidates are slices of one largest MBConv.

Why. With one set of weights per candidate (the paper's supernet), a candidate learns only on
the steps that sample it; on `data=clutter` the supernet's random paths stay near chance for
the whole 12-epoch benchmark search while the largest path (trained on every other step by
the sandwich rule) learns — so every inherited accuracy, and α, says "how close to the
largest path" (benchmarks/search_quality.py). With nested weights (Single-Path NAS, Stamoulis
et al. 2019; OFA's elastic kernel and width, Cai et al. 2020) a k×k kernel is the centre of
the largest kernel and an expansion e uses the first `in·e` hidden channels, so every step
that trains any candidate trains the weights all of them use. `kernels` nests only the
kernels, within each expansion (OFA's elastic kernel alone): candidates of different widths
keep their own weights.

Each candidate stays an `MBConv` with its own BatchNorms (statistics differ per candidate),
whose convolutions read their weight as a slice of the layer's `NestedMBConvWeights`; the
code that runs candidates (`MixedLayer`, `proxyless.recompute`) does not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .ops import Conv2d, MBConv, conv2d


class SlicedConv2d(nn.Module):
    """A bias-free conv whose weight is `source.weight[:out, :in, centre k×k]`: no parameters
    of its own, so the weights it trains are the source's."""

    def __init__(
        self, source: Conv2d, out_channels: int, in_channels: int, kernel: int, stride: int = 1
    ) -> None:
        super().__init__()
        big = source.kernel_size[0]
        if kernel > big or (big - kernel) % 2:
            raise ValueError(f"a {kernel}×{kernel} kernel is not the centre of a {big}×{big} one")
        self._source = (source,)  # a tuple: not registered, the layer owns the parameter
        self.out_channels, self.in_channels = out_channels, in_channels
        self.kernel_size = (kernel, kernel)
        self.stride, self.padding = (stride, stride), (kernel // 2, kernel // 2)
        self.groups = out_channels if source.groups > 1 else 1
        self._offset = (big - kernel) // 2

    @property
    def weight(self) -> torch.Tensor:
        w = self._source[0].weight
        o, k = self._offset, self.kernel_size[0]
        cin = 1 if self.groups > 1 else self.in_channels
        return w[: self.out_channels, :cin, o : o + k, o : o + k].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight, None, self.stride, self.padding, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, groups={self.groups}, sliced"
        )


class NestedMBConvWeights(nn.Module):
    """The largest MBConv's three convolutions of a layer (largest kernel, largest
    expansion); candidates slice them (`candidate`)."""

    def __init__(self, cin: int, cout: int, kernels: Sequence[int], expands: Sequence[int]) -> None:
        super().__init__()
        k, e = max(kernels), max(expands)
        mid = cin * e
        self.cin, self.cout = cin, cout
        self.expand = Conv2d(cin, mid, 1, bias=False) if e != 1 else None
        self.depthwise = Conv2d(mid, mid, k, padding=k // 2, groups=mid, bias=False)
        self.project = Conv2d(mid, cout, 1, bias=False)

    def candidate(self, kernel: int, expand: int, stride: int) -> MBConv:
        """An MBConv(kernel, expand) whose convolutions are slices of these weights."""
        op = MBConv(self.cin, self.cout, kernel, expand, stride)
        mid = self.cin * expand
        if op.expand_conv is not None:
            assert self.expand is not None
            op.expand_conv[0] = SlicedConv2d(self.expand, mid, self.cin, 1)
        op.depthwise[0] = SlicedConv2d(self.depthwise, mid, mid, kernel, stride)
        op.project[0] = SlicedConv2d(self.project, self.cout, mid, 1)
        return op


def materialized_state(op: nn.Module) -> dict[str, torch.Tensor]:
    """`op`'s state dict with every sliced conv's weight copied in under `<name>.weight`: the
    state a plain module of the same shape loads (`SuperNet.extract`)."""
    state = {k: v.detach().clone() for k, v in op.state_dict().items()}
    for name, m in op.named_modules():
        if isinstance(m, SlicedConv2d):
            state[f"{name}.weight"] = m.weight.detach().clone()
    return state
