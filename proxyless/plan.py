"""The one description of a network's shape, from which everything else derives.

A plan is an ordered list of parts (name, latency key, timm stage). The key is the op's full
signature (op type, input shape, output channels, kernel, expand, stride, residual), so the
model's modules, the latency-table keys, the per-key modules that profiling times and timm's
block strings are all read off the same parts. As in timm's `_efficientnet_builder`: one
decoder (`fixed_parts` / `candidate_part` / `arch_plan`) and one builder (`build_part`).

Zero ("skip the block") has no part: a Zero layer is simply absent from an arch's plan.

>>> from proxyless.space import get_space
>>> space = get_space("tiny")
>>> plan = arch_plan(space, [layer.candidates[0] for layer in space.layers()])
>>> [p.name for p in plan][:3], plan[-1].name
(['stem', 'first', 'layers.0'], 'classifier')
>>> timm_block(plan[1].key), timm_block(plan[2].key)
('ds_r1_k3_s1_c8', 'ir_r1_k3_s2_e3_c16')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from latency.keys import OpKey

from .ops import Block, ConvBNAct, Head, HeadConv, MBConv
from .space import LayerSpec, OpSpec, SearchSpace


@dataclass(frozen=True)
class Part:
    """One timed unit of a network: its name, its key (= its op spec and shapes), for blocks
    the timm stage (the first block is stage 0) and for searchable ones the layer index."""

    name: str
    key: OpKey
    stage: int = -1  # -1: not a block (stem, head, classifier)
    layer: int = -1  # -1: a fixed part


# --- decoder: space (+ ops) -> parts --------------------------------------------------------------
def fixed_parts(space: SearchSpace) -> dict[str, Part]:
    """The parts every network of `space` has: stem, first block, head conv, classifier."""
    s, fs = space.stem_out_size, space.final_size
    return {
        "stem": Part(
            "stem",
            OpKey(
                "stem",
                (space.in_channels, space.input_size, space.input_size),
                space.stem_channels,
                kernel=3,
                stride=space.stem_stride,
            ),
        ),
        "first": Part(
            "first",
            OpKey(
                "mbconv",
                (space.stem_channels, s, s),
                space.first_channels,
                kernel=3,
                expand=1,
                residual=space.stem_channels == space.first_channels,
            ),
            stage=0,
        ),
        "head": Part("head", OpKey("head", (space.last_channels, fs, fs), space.head_channels)),
        "classifier": Part(
            "classifier", OpKey("linear", (space.head_channels, 1, 1), space.num_classes)
        ),
    }


def candidate_part(layer: LayerSpec, op: OpSpec) -> Part | None:
    """The part of `op` in a searchable layer; None for Zero, which skips the block."""
    if op.is_zero:
        return None
    key = OpKey(
        "mbconv",
        (layer.in_channels, layer.in_size, layer.in_size),
        layer.out_channels,
        kernel=op.kernel,
        expand=op.expand,
        stride=layer.stride,
        residual=layer.residual,
    )
    return Part(f"layers.{layer.index}", key, stage=layer.stage + 1, layer=layer.index)


def arch_plan(space: SearchSpace, ops: Sequence[OpSpec]) -> list[Part]:
    """The parts of the network that takes `ops[i]` in searchable layer i, in forward order."""
    fixed = fixed_parts(space)
    chosen = [candidate_part(layer, op) for layer, op in zip(space.layers(), ops, strict=True)]
    blocks = [p for p in chosen if p is not None]
    return [fixed["stem"], fixed["first"], *blocks, fixed["head"], fixed["classifier"]]


def space_keys(space: SearchSpace) -> list[OpKey]:
    """Every key a network of `space` can need, each once."""
    keys = [p.key for p in fixed_parts(space).values()]
    for layer in space.layers():
        keys += [p.key for op in layer.candidates if (p := candidate_part(layer, op)) is not None]
    return list(dict.fromkeys(keys))


# --- builder: part -> module ----------------------------------------------------------------------
def build_op(key: OpKey) -> nn.Module:
    """The module of a key, without a block's residual (a mixed layer adds it itself)."""
    c = key.in_shape[0]
    if key.op == "stem":
        return ConvBNAct(c, key.out_channels, key.kernel, key.stride)
    if key.op == "mbconv":
        return MBConv(c, key.out_channels, key.kernel, key.expand, key.stride)
    if key.op == "head":
        return HeadConv(c, key.out_channels)
    if key.op == "linear":
        return nn.Linear(c, key.out_channels)
    raise ValueError(f"no module for op type {key.op!r} (key {key})")


def build_part(key: OpKey) -> nn.Module:
    """The module of a key as it runs in a network: a block carries its residual."""
    module = build_op(key)
    return Block(module, key.residual) if key.op == "mbconv" else module


def build_fixed(space: SearchSpace) -> tuple[nn.Module, nn.Module, Head]:
    """Stem, first block and head (conv + classifier) of `space`, as modules."""
    f = fixed_parts(space)
    stem, first = build_part(f["stem"].key), build_part(f["first"].key)
    head = Head(build_op(f["head"].key), build_op(f["classifier"].key), space.dropout)
    return stem, first, head


def timm_block(key: OpKey) -> str:
    """timm's EfficientNet-builder string of a block key (expand 1 is timm's `ds` block)."""
    if key.op != "mbconv":
        raise ValueError(f"timm builds {key.op!r} itself; only blocks have a block string")
    if key.expand == 1:
        return f"ds_r1_k{key.kernel}_s{key.stride}_c{key.out_channels}"
    return f"ir_r1_k{key.kernel}_s{key.stride}_e{key.expand}_c{key.out_channels}"
