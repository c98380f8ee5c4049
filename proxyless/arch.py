"""A derived architecture: a versioned JSON file, a standalone model, a timm `arch_def`.

>>> from proxyless.space import get_space
>>> space = get_space("tiny")
>>> arch = Arch(space, [layer.candidates[0] for layer in space.layers()])
>>> Arch.from_dict(arch.to_dict()) == arch
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency.atomic import atomic_write_json as write_json_atomic

from .plan import arch_plan, build_fixed, build_part, timm_block
from .space import OpSpec, SearchSpace

ARCH_FORMAT = "proxyless-arch"
ARCH_VERSION = 1
# The authors' published networks, shipped as their `net.config` files (proxyless/nets/).
NETS_DIR = Path(__file__).resolve().parent / "nets"
ARCH_PRESETS = ("proxyless_cpu", "proxyless_gpu", "proxyless_mobile")


class ArchError(ValueError):
    """A malformed or incompatible arch file."""


@dataclass
class Arch:
    """One op per searchable layer of `space` (Zero included), plus derive-time probabilities."""

    space: SearchSpace
    ops: list[OpSpec]
    probs: list[list[float]] | None = None

    def __post_init__(self) -> None:
        layers = self.space.layers()
        if len(self.ops) != len(layers):
            raise ArchError(
                f"arch has {len(self.ops)} layers but space {self.space.name!r} has {len(layers)}"
            )
        for layer, op in zip(layers, self.ops, strict=True):
            if op not in layer.candidates:
                allowed = ", ".join(str(c) for c in layer.candidates)
                raise ArchError(
                    f"layer {layer.index}: op {op} not allowed here (allowed: {allowed})"
                )
        if self.probs is not None and len(self.probs) != len(layers):
            raise ArchError(f"probs has {len(self.probs)} rows, expected {len(layers)}")

    def check_space(self, space: SearchSpace) -> None:
        if space != self.space:
            raise ArchError(
                f"arch was derived from space {self.space.name!r} with a different configuration "
                f"than the requested {space.name!r}; use the space stored in the arch file"
            )

    def block_strings(self) -> list[str]:
        return [str(op) for op in self.ops]

    @classmethod
    def from_strings(cls, space: SearchSpace, ops: Sequence[str]) -> Arch:
        """The inverse of `block_strings` (e.g. the `arch` lists of benchmark rows)."""
        return cls(space, [OpSpec.parse(s) for s in ops])

    def indices(self) -> list[int]:
        """Each layer's op as an index into that layer's candidates (a supernet path, or a
        row of per-candidate costs)."""
        layers = self.space.layers()
        return [layer.candidates.index(op) for layer, op in zip(layers, self.ops, strict=True)]

    # --- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": ARCH_FORMAT,
            "version": ARCH_VERSION,
            "space": self.space.to_dict(),
            "ops": self.block_strings(),
            "probs": self.probs,
            "input_size": self.space.input_size,
            "num_classes": self.space.num_classes,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Arch:
        if not isinstance(d, dict) or d.get("format") != ARCH_FORMAT:
            raise ArchError(f"not a proxyless arch description (expected format {ARCH_FORMAT!r})")
        if d.get("version") != ARCH_VERSION:
            raise ArchError(
                f"arch file version {d.get('version')!r}; this reader knows {ARCH_VERSION}"
            )
        try:
            space = SearchSpace.from_dict(d["space"])
            ops = [OpSpec.parse(s) for s in d["ops"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ArchError(f"malformed arch description: {e}") from e
        return cls(space, ops, d.get("probs"))

    def save(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        path = Path(path)
        if not path.is_file():
            raise ArchError(f"arch file {path} does not exist; pass the arch.json a search wrote")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ArchError(f"arch file {path} is not valid JSON: {e}") from e
        try:
            return cls.from_dict(data)
        except ArchError as e:
            raise ArchError(f"arch file {path}: {e}") from e

    # --- models ----------------------------------------------------------------------------
    def build(self) -> StandaloneNet:
        """A freshly initialised standalone model (`SuperNet.extract` gives trained weights)."""
        return StandaloneNet(self)

    def timm_arch_def(self) -> list[list[str]]:
        """timm EfficientNet-builder block strings, one stage per list (Zero layers dropped)."""
        stages: list[list[str]] = []
        for part in arch_plan(self.space, self.ops):
            if part.stage < 0:  # stem, head, classifier: timm builds its own
                continue
            stages += [[] for _ in range(part.stage + 1 - len(stages))]
            stages[part.stage].append(timm_block(part.key))
        return [s for s in stages if s]


def resolve_arch(spec: str | Path) -> Arch:
    """Whatever a user passes as `arch=`: a preset name (`ARCH_PRESETS`), an arch.json
    (written by a search or `Arch.save`), or a ProxylessNAS `net.config` (told apart by
    content, not by file name).

    >>> resolve_arch("proxyless_mobile").space.head_width
    1280
    """
    from .netconfig import arch_from_net_config, is_net_config, load_net_config

    text = str(spec)
    if text in ARCH_PRESETS:
        return load_net_config(NETS_DIR / f"{text}.config", name=text)
    path = Path(text).expanduser()
    accepted = (
        f"pass an arch.json written by a search, a ProxylessNAS net.config, or a preset "
        f"({', '.join(ARCH_PRESETS)})"
    )
    if not path.is_file():
        looks_like_file = path.suffix or len(path.parts) > 1
        what = f"arch file {path} does not exist" if looks_like_file else f"unknown arch {text!r}"
        raise ArchError(f"{what}; {accepted}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArchError(f"arch file {path} is not valid JSON ({e}); {accepted}") from None
    if is_net_config(data):
        return arch_from_net_config(data, path.stem, source=str(path))
    if isinstance(data, dict) and data.get("format") == ARCH_FORMAT:
        try:
            return Arch.from_dict(data)
        except ArchError as e:
            raise ArchError(f"arch file {path}: {e}") from None
    raise ArchError(
        f"{path} is not a proxyless arch.json (format {ARCH_FORMAT!r}) nor a ProxylessNAS "
        f"net.config (first_conv, blocks, ...); {accepted}"
    )


class StandaloneNet(nn.Module):
    """The derived network: same module structure as the supernet's chosen path.

    `layer_index[i]` is the searchable layer that `blocks[i]` comes from.
    """

    def __init__(self, arch: Arch) -> None:
        super().__init__()
        self.arch = arch
        self.stem, self.first, self.head = build_fixed(arch.space)
        blocks = [p for p in arch_plan(arch.space, arch.ops) if p.layer >= 0]
        self.layer_index = [p.layer for p in blocks]
        self.blocks = nn.Sequential(*(build_part(p.key) for p in blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.first(self.stem(x))))
