"""Tiny conv items and a fast protocol: latency tests need no proxyless and little time."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from latency.keys import OpKey
from latency.protocol import Protocol

Builder = Callable[[], tuple[nn.Module, torch.Tensor]]


def conv_item(c_in: int, c_out: int, size: int = 8, kernel: int = 3) -> tuple[str, Builder]:
    """(key, builder) of a conv+ReLU on a C×size×size input, batch 1, float32."""
    key = str(OpKey("conv", (c_in, size, size), c_out, kernel=kernel))

    def build() -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        module = nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU())
        return module, torch.randn(1, c_in, size, size)

    return key, build


@pytest.fixture
def items() -> dict[str, Builder]:
    return dict(conv_item(c, 2 * c) for c in (2, 4, 8))


@pytest.fixture
def fast() -> Protocol:
    return Protocol(warmup=2, rounds=3, repeats=3, max_repeats=20, window_ms=0.2)


@pytest.fixture
def make_conv() -> Callable[..., tuple[str, Builder]]:
    return conv_item
