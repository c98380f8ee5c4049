"""Search spaces as data: a space is a dataclass, so a new one needs a config, not code.

>>> space = get_space("imagenet")
>>> len(space.layers())
21
>>> [str(op) for op in space.layers()[1].candidates][-2:]
['mb_k7_e6', 'zero']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_OP_RE = re.compile(r"^mb_k(?P<k>\d+)_e(?P<e>\d+)$")


@dataclass(frozen=True, order=True)
class OpSpec:
    """One candidate op: an MBConv (kernel, expand) or Zero (skip the block).

    Encoded as timm-like strings: ``mb_k5_e6`` or ``zero``.
    """

    kind: str  # "mb" | "zero"
    kernel: int = 0
    expand: int = 0

    @property
    def is_zero(self) -> bool:
        return self.kind == "zero"

    def __str__(self) -> str:
        return "zero" if self.is_zero else f"mb_k{self.kernel}_e{self.expand}"

    @classmethod
    def parse(cls, text: str) -> OpSpec:
        if text == "zero":
            return cls("zero")
        m = _OP_RE.match(text)
        if m is None:
            raise ValueError(f"unknown op {text!r}: expected 'mb_k<kernel>_e<expand>' or 'zero'")
        return cls("mb", int(m["k"]), int(m["e"]))


@dataclass(frozen=True)
class StageSpec:
    width: int
    depth: int
    stride: int


@dataclass(frozen=True)
class LayerSpec:
    """A searchable layer, resolved to concrete channels, stride and input resolution."""

    index: int
    stage: int
    in_channels: int
    out_channels: int
    stride: int
    in_size: int
    candidates: tuple[OpSpec, ...]

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def out_size(self) -> int:
        return conv_out_size(self.in_size, self.stride)


def conv_out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded conv with odd kernel."""
    return (size - 1) // stride + 1


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10% (MobileNetV2)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class SearchSpace:
    """A MobileNetV2-style supernet: stem, a fixed first block, searchable stages, head."""

    name: str
    input_size: int
    num_classes: int
    stages: tuple[StageSpec, ...]
    stem_width: int = 32
    stem_stride: int = 2
    first_width: int = 16
    head_width: int = 1280
    kernel_sizes: tuple[int, ...] = (3, 5, 7)
    expand_ratios: tuple[int, ...] = (3, 6)
    allow_zero: bool = True
    width_mult: float = 1.0
    dropout: float = 0.0
    in_channels: int = 3

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError(f"space {self.name!r} has no stages")
        if not self.kernel_sizes or any(k % 2 == 0 or k < 1 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive ints, got {self.kernel_sizes}")
        if not self.expand_ratios or any(e < 1 for e in self.expand_ratios):
            raise ValueError(f"expand_ratios must be positive ints, got {self.expand_ratios}")
        if self.width_mult <= 0:
            raise ValueError(f"width_mult must be > 0, got {self.width_mult}")

    def channels(self, width: int) -> int:
        return make_divisible(width * self.width_mult)

    @property
    def stem_channels(self) -> int:
        return self.channels(self.stem_width)

    @property
    def first_channels(self) -> int:
        return self.channels(self.first_width)

    @property
    def head_channels(self) -> int:
        return make_divisible(self.head_width * max(1.0, self.width_mult))

    @property
    def stem_out_size(self) -> int:
        return conv_out_size(self.input_size, self.stem_stride)

    def mb_candidates(self) -> tuple[OpSpec, ...]:
        return tuple(OpSpec("mb", k, e) for k in self.kernel_sizes for e in self.expand_ratios)

    def layers(self) -> list[LayerSpec]:
        """Resolve stages into searchable layers (the first block of a stage takes its stride)."""
        out: list[LayerSpec] = []
        in_ch, size = self.first_channels, self.stem_out_size
        for s, stage in enumerate(self.stages):
            out_ch = self.channels(stage.width)
            for d in range(stage.depth):
                stride = stage.stride if d == 0 else 1
                cands = self.mb_candidates()
                if self.allow_zero and stride == 1 and in_ch == out_ch:
                    cands = (*cands, OpSpec("zero"))
                out.append(LayerSpec(len(out), s, in_ch, out_ch, stride, size, cands))
                in_ch, size = out_ch, conv_out_size(size, stride)
        return out

    @property
    def last_channels(self) -> int:
        return self.channels(self.stages[-1].width)

    @property
    def final_size(self) -> int:
        layers = self.layers()
        return layers[-1].out_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        d = dict(d)
        try:
            d["stages"] = tuple(StageSpec(**s) for s in d["stages"])
            for key in ("kernel_sizes", "expand_ratios"):
                if key in d:
                    d[key] = tuple(d[key])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed search space description: {e}") from e


def _stages(spec: Sequence[tuple[int, int, int]]) -> tuple[StageSpec, ...]:
    return tuple(StageSpec(w, d, s) for w, d, s in spec)


PRESETS: dict[str, SearchSpace] = {
    # ProxylessNAS ImageNet space (MobileNetV2 backbone), 21 searchable layers.
    "imagenet": SearchSpace(
        name="imagenet",
        input_size=224,
        num_classes=1000,
        stages=_stages([(24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]),
    ),
    # Same blocks for 32×32 inputs: stride-1 stem and first stage, so the final map is 4×4.
    "cifar": SearchSpace(
        name="cifar",
        input_size=32,
        num_classes=10,
        stem_stride=1,
        stages=_stages([(24, 4, 1), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]),
    ),
    # Small enough to search on a 2-core CPU in minutes; same candidates as the real spaces.
    "tiny": SearchSpace(
        name="tiny",
        input_size=32,
        num_classes=10,
        stem_width=16,
        first_width=8,
        head_width=128,
        stages=_stages([(16, 2, 2), (24, 2, 2), (32, 2, 1)]),
    ),
}


def get_space(name: str, **overrides: Any) -> SearchSpace:
    """A preset by name, with field overrides (e.g. ``num_classes=100, width_mult=0.75``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown search space {name!r}; presets: {', '.join(PRESETS)}")
    base = PRESETS[name].to_dict()
    base.update(overrides)
    return SearchSpace.from_dict(base)
