"""Costs for the hardware-aware loss: a differentiable expected cost, and FLOPs/params as
stand-ins for latency (a network's latency against a table: `latency.predict`).

>>> import torch
>>> p = [torch.tensor([0.25, 0.75])]
>>> float(expected_cost(p, [torch.tensor([2.0, 4.0])], fixed=1.0))
4.5
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


def expected_cost(
    probs: Sequence[Tensor], costs: Sequence[Tensor | Sequence[float]], fixed: float = 0.0
) -> Tensor:
    """E[cost] = fixed + Σ_l Σ_j p_lj · c_lj — differentiable in every p (the full softmax,
    not a sample). Zero candidates simply have cost 0."""
    if len(probs) != len(costs):
        raise ValueError(f"{len(probs)} probability vectors but {len(costs)} cost vectors")
    if not probs:
        return torch.tensor(float(fixed))
    total = torch.zeros((), dtype=probs[0].dtype, device=probs[0].device) + fixed
    for i, (p, c) in enumerate(zip(probs, costs, strict=True)):
        c = torch.as_tensor(c, dtype=p.dtype, device=p.device)
        if c.shape != p.shape:
            raise ValueError(f"layer {i}: probs shape {tuple(p.shape)} != costs {tuple(c.shape)}")
        total = total + (p * c).sum()
    return total


def _fvcore_nn() -> Any:
    """fvcore.nn, imported without the torch.jit deprecation warning its import triggers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn

    return fvcore.nn


def flops(module: nn.Module, example_input: Tensor) -> int:
    """fvcore's count: one multiply-add counts as one flop (so it is really MACs)."""
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation in fvcore
            fca = _fvcore_nn().FlopCountAnalysis(module, (example_input,))
            fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(fca.total())
    finally:
        module.train(was_training)


def conv_linear_macs(module: nn.Module, example_input: Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers only: the papers' "FLOPs"
    (ProxylessNAS, MobileNetV2...). fvcore's `flops` also counts BatchNorm, pooling and
    the like, so it is a little larger. Biases are not counted.

    >>> conv_linear_macs(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(),
    ...                                nn.Linear(8 * 4 * 4, 10)), torch.zeros(1, 3, 4, 4))
    4736
    """
    total = 0

    def count(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.modules.conv._ConvNd):
            per_output = mod.in_channels // mod.groups * math.prod(mod.kernel_size)
            total += out.numel() // out.shape[0] * per_output
        elif isinstance(mod, nn.Linear):
            total += out.numel() // out.shape[0] * mod.in_features

    hooks = [m.register_forward_hook(count) for m in module.modules()]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example_input[:1])
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    return total


def params(module: nn.Module) -> int:
    """Number of parameters (fvcore's parameter_count, shared tensors counted once)."""
    return int(_fvcore_nn().parameter_count(module)[""])
