"""Latency tables for search spaces and architectures: what to profile, what a space's
candidates cost, what an arch is predicted to take, and measuring it end to end.

`latency` is generic and knows nothing of supernets; the keys of a network come from its
plan (`proxyless.plan`), so the sum of a network's entries predicts the whole network.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency.errors import MissingKeyError
from latency.keys import OpKey
from latency.predict import LatencyAnalysis
from latency.protocol import Builder, Protocol
from latency.table import LatencyTable
from latency.validate import Network

from .arch import Arch
from .plan import arch_plan, build_part, candidate_part, fixed_parts, space_keys
from .space import PRESETS, SearchSpace


def key_builder(key: OpKey, batch: int) -> Builder:
    def build() -> tuple[nn.Module, torch.Tensor]:
        shape = (batch, key.in_shape[0]) if key.op == "linear" else (batch, *key.in_shape)
        return build_part(key).eval(), torch.randn(shape)

    return build


def space_items(space: SearchSpace, batch: int = 1) -> dict[str, Builder]:
    return {str(k): key_builder(k, batch) for k in space_keys(space)}


def arch_keys(arch: Arch) -> list[str]:
    """The table keys of `arch`'s network, in forward order (Zero layers are absent)."""
    return [str(p.key) for p in arch_plan(arch.space, arch.ops)]


def arch_analysis(
    arch: Arch, table: LatencyTable, calibrated: bool | None = None
) -> LatencyAnalysis:
    """`arch`'s latency against `table`, by layer; calibrated when the table has a calibration
    (unless `calibrated` says otherwise), as the search's costs are."""
    return LatencyAnalysis(
        table, [(p.name, str(p.key)) for p in arch_plan(arch.space, arch.ops)], calibrated
    )


def space_costs(
    space: SearchSpace, cost: Callable[[OpKey], float], fixed_extra: float = 0.0
) -> tuple[list[list[float]], float]:
    """Per-layer candidate costs (Zero = 0) and the fixed part, for `SuperNet.set_costs`:
    the one split of a space's cost, whatever `cost` measures (ms, FLOPs, params)."""
    fixed = sum(cost(p.key) for p in fixed_parts(space).values()) + fixed_extra
    per_layer = [
        [
            0.0 if (p := candidate_part(layer, op)) is None else cost(p.key)
            for op in layer.candidates
        ]
        for layer in space.layers()
    ]
    return per_layer, fixed


def table_costs(
    space: SearchSpace, table: LatencyTable, calibrated: bool | None = None
) -> tuple[list[list[float]], float]:
    """`space_costs` in ms from `table`, through the predictor: with a calibration
    ``a·sum + b`` (used by default when present), each entry is scaled by a and b joins the
    fixed part, so the expected latency stays linear in p."""
    keys = [str(k) for k in space_keys(space)]
    analysis = LatencyAnalysis(table, list(zip(keys, keys, strict=True)), calibrated)
    analysis.check()
    ms = analysis.by_layer()
    return space_costs(space, lambda key: ms[str(key)], analysis.calibration.b)  # type: ignore[return-value]


def space_options(space: SearchSpace) -> list[str]:
    """The `proxyless-profile` / `proxyless-validate` options that build `space`'s keys: the
    preset, then each field that differs from it (what the search took from its data:
    resolution, classes, channels; width_mult and space.overrides).

    >>> from proxyless.space import get_space
    >>> space_options(get_space("tiny", input_size=8, in_channels=1))
    ['space=tiny', 'resolution=8', '+space.overrides.in_channels=1']
    """
    if space.name not in PRESETS:
        raise ValueError(f"space {space.name!r} is no preset; profile it from Python instead")
    base, mine = PRESETS[space.name].to_dict(), space.to_dict()
    named = {"input_size": "resolution", "num_classes": "num_classes"}
    opts = [f"space={space.name}"]
    if mine["width_mult"] != base["width_mult"]:
        opts.append(f"space.width_mult={mine['width_mult']}")
    for field, value in mine.items():
        if field in ("name", "width_mult", "dropout") or value == base[field]:
            continue  # dropout: no key depends on it
        if field in named:
            opts.append(f"{named[field]}={value}")
        else:
            opts.append(f"+space.overrides.{field}={_hydra_value(value)}")
    return opts


def _hydra_value(value: Any) -> str:
    """A Hydra override value: lists as [..], dicts as {k:v}, scalars as they print."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def profile_command(
    space: SearchSpace, out: str | Path, backend: str, threads: int = 1, batch: int = 1
) -> str:
    """The command that measures the keys of `space` missing from the table `out` (and only
    those: profiling resumes an existing table), on that table's backend, threads, batch
    and protocol. For a phone's table (ort-mobile): bundle, run on the device, import."""
    opts = " ".join(shlex.quote(o) for o in space_options(space))
    out = shlex.quote(str(out))
    if backend == "ort-mobile":
        return (
            f"proxyless-profile mode=bundle {opts} batch={batch} out=bundle/, then on the "
            "device python latency_runner.py bundle --out results.json --threads "
            f"{threads}, then proxyless-profile mode=import {opts} results=results.json out={out}"
        )
    return f"proxyless-profile {opts} backend={backend} threads={threads} batch={batch} out={out}"


def table_missing_keys(space: SearchSpace, table: LatencyTable, path: str | Path) -> None:
    """Raise MissingKeyError for the keys of `space` that `table` (stored at `path`) lacks,
    naming the command that adds exactly those to that file."""
    if missing := table.missing(str(k) for k in space_keys(space)):
        h = table.header
        raise MissingKeyError(missing, profile_command(space, path, h.backend, h.threads, h.batch))


def sample_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """`n` architectures with uniformly sampled ops per layer (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    layers = space.layers()
    return [
        Arch(
            space,
            [
                layer.candidates[int(torch.randint(len(layer.candidates), (1,), generator=gen))]
                for layer in layers
            ],
        )
        for _ in range(n)
    ]


def arch_network(arch: Arch, name: str, batch: int = 1) -> Network:
    def build() -> tuple[nn.Module, torch.Tensor]:
        s = arch.space
        return arch.build().eval(), torch.randn(batch, s.in_channels, s.input_size, s.input_size)

    return Network(name, build, arch_keys(arch))


def profile_space_table(
    space: SearchSpace,
    backend: str,
    path: str | Path,
    batch: int = 1,
    threads: int = 1,
    protocol: Protocol | None = None,
    progress: bool | None = None,
    command: str = "",
    force: bool = False,
) -> LatencyTable:
    """Build or extend (resumably) the table of every key of `space` at `path`; `force`
    extends a table measured with another backend, device or thread count."""
    from latency.backends import get_backend
    from latency.profile import profile

    path = Path(path)
    be = get_backend(backend, threads=threads)
    table = LatencyTable.load(path) if path.exists() else None
    progress = sys.stderr.isatty() if progress is None else progress
    return profile(
        space_items(space, batch),
        be,
        table,
        protocol,
        progress=progress,
        profile_command=command,
        save_to=path,
        chunk=16,
        force=force,
    )


def measure_arch(
    arch: Arch,
    backend: str,
    batch: int = 1,
    threads: int = 1,
    protocol: Protocol | None = None,
    anchor_ms: float | None = None,
) -> float:
    """End-to-end latency (ms) of the standalone network on this machine, measured with the
    same protocol as the table's entries, to check the table's prediction; with the table's
    `anchor_ms`, rescaled to the machine speed the table was measured at (`latency.anchor`)."""
    from latency.anchor import measure_anchored
    from latency.backends import get_backend
    from latency.profile import measure_networks

    be = get_backend(backend, threads=threads)
    builders = {"arch": arch_network(arch, "arch", batch).build}
    entries, _ = measure_anchored(
        measure_networks, builders, anchor_ms, be, protocol, progress=False
    )
    return entries["arch"].ms
