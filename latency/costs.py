"""Costs for the hardware-aware loss: a differentiable expected cost, FLOPs/params as
stand-ins for latency, and a latency analysis of a network against a table.

>>> import torch
>>> p = [torch.tensor([0.25, 0.75])]
>>> float(expected_cost(p, [torch.tensor([2.0, 4.0])], fixed=1.0))
4.5
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from latency.errors import MissingKeyError
from latency.table import LatencyTable


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


def params(module: nn.Module) -> int:
    """Number of parameters (fvcore's parameter_count, shared tensors counted once)."""
    return int(_fvcore_nn().parameter_count(module)[""])


class LatencyAnalysis:
    """A network's latency against a table, shaped like fvcore's FlopCountAnalysis.

    `layers` are (layer name, key) pairs; a layer that is skipped (Zero) is simply absent.
    Nothing raises at construction or in by_layer(); total() raises MissingKeyError.

    >>> from latency.table import Entry, LatencyTable, TableHeader
    >>> t = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    >>> t.add("stem_i3x8x8_o8_k3_e1_s2_r0", Entry(0.5, 0.4, 0.6, 9))
    >>> a = LatencyAnalysis(t, [("stem", "stem_i3x8x8_o8_k3_e1_s2_r0"),
    ...                         ("b1", "mbconv_i8x4x4_o8_k3_e3_s1_r1")])
    >>> a.by_layer(), a.missing_keys()
    ({'stem': 0.5, 'b1': None}, ['mbconv_i8x4x4_o8_k3_e3_s1_r1'])
    """

    def __init__(
        self, table: LatencyTable, layers: Sequence[tuple[str, str]], calibrated: bool = False
    ) -> None:
        self.table = table
        self.layers = [(name, str(key)) for name, key in layers]
        self.calibrated = calibrated

    def missing_keys(self) -> list[str]:
        return self.table.missing(key for _, key in self.layers)

    def by_layer(self) -> dict[str, float | None]:
        """Uncalibrated ms per layer; None where the table lacks the key."""
        e = self.table.entries
        return {name: (e[key].median_ms if key in e else None) for name, key in self.layers}

    def by_op_type(self) -> dict[str, float]:
        """ms per op type (the key's first word), known keys only."""
        out: dict[str, float] = {}
        for _, key in self.layers:
            if key in self.table.entries:
                op = key.split("_", 1)[0]
                out[op] = out.get(op, 0.0) + self.table.entries[key].median_ms
        return out

    def total(self) -> float:
        """Predicted ms of the whole network (calibrated if asked)."""
        if missing := self.missing_keys():
            raise MissingKeyError(missing, self.table.header.profile_command)
        return self.table.predict([key for _, key in self.layers], calibrated=self.calibrated)
