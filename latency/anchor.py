"""A fixed workload timed beside every measurement, so that measurements taken minutes
apart share one machine speed.

The protocol's reference item removes slow episodes *within* one measurement, relative to
that measurement's fastest moment. Between measurements nothing did: a table profiled at
one speed and networks measured a few minutes later at another (a shared machine drifts
10-25% on that time scale: issue 12 saw the raw table sum off by 11-26% in four runs of
the same 60 networks, and two passes over them 13% apart) disagree by the drift.
So every measurement also times this anchor, with the same statistic as its items; a
table stores the anchor's ms (`header.anchor_ms`), and later measurements against it
(networks, extra keys) are rescaled by ``table anchor / anchor now``: all on the table's
speed. Tables without `anchor_ms` (older ones, imported ones) are used as measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from latency.table import Entry

ANCHOR_KEY = "__anchor__"


def anchor_builder() -> tuple[nn.Module, torch.Tensor]:
    """The anchor: an inverted-residual block (1x1 expand, 3x3 depthwise, 1x1 project,
    BatchNorm, ReLU6) on a 1x24x28x28 input, the op mix of the nets we time, ~1 ms on one
    CPU core. Seeded, so every run builds the same weights and input."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        block = nn.Sequential(
            nn.Conv2d(24, 96, 1, bias=False),
            nn.BatchNorm2d(96),
            nn.ReLU6(),
            nn.Conv2d(96, 96, 3, padding=1, groups=96, bias=False),
            nn.BatchNorm2d(96),
            nn.ReLU6(),
            nn.Conv2d(96, 24, 1, bias=False),
            nn.BatchNorm2d(24),
        ).eval()
        return block, torch.randn(1, 24, 28, 28)


def rescale(entries: Mapping[str, Entry], factor: float) -> dict[str, Entry]:
    """Every timing of every entry times `factor` (variances by its square)."""
    out = {}
    for k, e in entries.items():
        var = None if e.var_ms2 is None else e.var_ms2 * factor**2
        out[k] = dataclasses.replace(
            e,
            ms=e.ms * factor,
            calls_p10_ms=e.calls_p10_ms * factor,
            calls_p90_ms=e.calls_p90_ms * factor,
            var_ms2=var,
        )
    return out


def split_anchor(
    entries: Mapping[str, Entry], anchor_ms: float | None
) -> tuple[dict[str, Entry], float]:
    """Take the anchor out of a measurement's `entries` and rescale the rest to the speed
    at which `anchor_ms` was measured (None: this measurement sets the speed, nothing is
    rescaled). Returns (entries, the anchor's ms in this measurement)."""
    got = dict(entries)
    now = got.pop(ANCHOR_KEY).ms
    return (got if anchor_ms is None else rescale(got, anchor_ms / now)), now


def measure_anchored(
    measure: Callable[..., Mapping[str, Entry]],
    builders: Mapping[str, Any],
    anchor_ms: float | None,
    *args: Any,
    **kwargs: Any,
) -> tuple[dict[str, Entry], float | None]:
    """`measure(builders, *args, **kwargs)` with the anchor measured among the items, the
    entries rescaled to the speed at which `anchor_ms` was measured. Returns (entries, this
    measurement's speed relative to it: > 1 slower). `anchor_ms` None: measured as is."""
    if anchor_ms is None:
        return dict(measure(builders, *args, **kwargs)), None
    if ANCHOR_KEY in builders:
        raise ValueError(f"{ANCHOR_KEY!r} is reserved for the speed anchor; rename that item")
    got, now = split_anchor(
        measure({ANCHOR_KEY: anchor_builder, **builders}, *args, **kwargs), anchor_ms
    )
    return got, now / anchor_ms
