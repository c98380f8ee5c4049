"""Turn search spaces and architectures into latency-table keys and modules.

`latency` is generic and knows nothing of supernets; this module is the one place that says
which keys a network is made of (stem, first block, one per searchable layer, head,
classifier), so the sum of a network's entries predicts the whole network.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from latency.costs import LatencyAnalysis
from latency.keys import OpKey
from latency.protocol import Builder, Protocol
from latency.table import LatencyTable
from latency.validate import Network

from .arch import Arch
from .ops import Block, ConvBNAct, MBConv
from .space import LayerSpec, OpSpec, SearchSpace


def fixed_keys(space: SearchSpace) -> dict[str, OpKey]:
    """Keys of the parts every network of the space has, by layer name."""
    s, fs = space.stem_out_size, space.final_size
    return {
        "stem": OpKey(
            "stem",
            (space.in_channels, space.input_size, space.input_size),
            space.stem_channels,
            kernel=3,
            stride=space.stem_stride,
        ),
        "first": OpKey(
            "mbconv",
            (space.stem_channels, s, s),
            space.first_channels,
            kernel=3,
            expand=1,
            residual=space.stem_channels == space.first_channels,
        ),
        "head": OpKey("head", (space.last_channels, fs, fs), space.head_channels),
        "classifier": OpKey("linear", (space.head_channels, 1, 1), space.num_classes),
    }


def candidate_key(layer: LayerSpec, op: OpSpec) -> OpKey | None:
    """Key of one candidate in one layer; None for Zero, which costs nothing."""
    if op.is_zero:
        return None
    return OpKey(
        "mbconv",
        (layer.in_channels, layer.in_size, layer.in_size),
        layer.out_channels,
        kernel=op.kernel,
        expand=op.expand,
        stride=layer.stride,
        residual=layer.residual,
    )


class _HeadConv(nn.Module):
    """The head's 1×1 conv + pool, as one timed unit (classifier is its own key)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.pool = ConvBNAct(cin, cout, 1), nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x)).flatten(1)


def module_for_key(key: OpKey) -> nn.Module:
    """A freshly initialised module with the key's signature (eval mode)."""
    c = key.in_shape[0]
    if key.op == "stem":
        module: nn.Module = ConvBNAct(c, key.out_channels, key.kernel, key.stride)
    elif key.op == "mbconv":
        body = MBConv(c, key.out_channels, key.kernel, key.expand, key.stride)
        module = Block(body, key.residual)
    elif key.op == "head":
        module = _HeadConv(c, key.out_channels)
    elif key.op == "linear":
        module = nn.Linear(c, key.out_channels)
    else:
        raise ValueError(f"no module for op type {key.op!r} (key {key})")
    return module.eval()


def key_builder(key: OpKey, batch: int) -> Builder:
    def build() -> tuple[nn.Module, torch.Tensor]:
        shape = (batch, key.in_shape[0]) if key.op == "linear" else (batch, *key.in_shape)
        return module_for_key(key), torch.randn(shape)

    return build


def space_keys(space: SearchSpace) -> list[OpKey]:
    """Every key a network of the space can need, each once."""
    keys = list(fixed_keys(space).values())
    for layer in space.layers():
        keys += [k for op in layer.candidates if (k := candidate_key(layer, op)) is not None]
    return list(dict.fromkeys(keys))


def space_items(space: SearchSpace, batch: int = 1) -> dict[str, Builder]:
    return {str(k): key_builder(k, batch) for k in space_keys(space)}


def arch_layers(arch: Arch) -> list[tuple[str, str]]:
    """(layer name, key) pairs of a derived network; Zero layers are absent."""
    fixed = fixed_keys(arch.space)
    out = [("stem", str(fixed["stem"])), ("first", str(fixed["first"]))]
    for layer, op in zip(arch.space.layers(), arch.ops, strict=True):
        if (key := candidate_key(layer, op)) is not None:
            out.append((f"layers.{layer.index}", str(key)))
    return out + [("head", str(fixed["head"])), ("classifier", str(fixed["classifier"]))]


def arch_keys(arch: Arch) -> list[str]:
    return [key for _, key in arch_layers(arch)]


def arch_analysis(arch: Arch, table: LatencyTable, calibrated: bool = False) -> LatencyAnalysis:
    return LatencyAnalysis(table, arch_layers(arch), calibrated=calibrated)


def table_costs(
    space: SearchSpace, table: LatencyTable, calibrated: bool | None = None
) -> tuple[list[list[float]], float]:
    """Per-layer candidate costs and the fixed part, in ms, for `SuperNet.set_costs`.

    With a calibration ``a·sum + b`` in the table (used by default when present), each
    entry is scaled by a and b joins the fixed part, so the expected latency stays linear in p.
    """
    use_cal = bool(table.header.calibration) if calibrated is None else calibrated
    a, b = (1.0, 0.0)
    if use_cal:
        cal = table.header.calibration or {}
        a, b = float(cal["a"]), float(cal["b"])
    fixed = sum(table.lookup(str(k)).median_ms for k in fixed_keys(space).values())
    missing = table.missing(str(k) for k in space_keys(space))
    if missing:
        table.lookup(missing[0])  # raises MissingKeyError naming the key and command
    per_layer = [
        [
            0.0 if (k := candidate_key(layer, op)) is None else a * table.lookup(str(k)).median_ms
            for op in layer.candidates
        ]
        for layer in space.layers()
    ]
    return per_layer, a * fixed + b


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
) -> float:
    """End-to-end latency (ms) of the standalone network on this machine, measured with the
    same protocol as the table's entries, to check the table's prediction."""
    from latency.backends import get_backend
    from latency.profile import measure_networks

    be = get_backend(backend, threads=threads)
    entries = measure_networks(
        {"arch": arch_network(arch, "arch", batch).build}, be, protocol, progress=False
    )
    return entries["arch"].median_ms
