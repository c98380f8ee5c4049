"""The original ProxylessNAS code's `net.config` (JSON) <-> an `Arch`.

The authors publish their searched networks as `net.config`: `first_conv`, a list of
`MobileInvertedResidualBlock`s (an `MBInvertedConvLayer` or a `ZeroLayer`, plus an
`IdentityLayer` shortcut where the block is residual), `feature_mix_layer`, `classifier`.
Importing reads the *space* off the file as data (stem, first block, stage widths, depths
and strides, head width, classes) and the op of every searchable layer, Zero included; a
file this space cannot express is an `ArchError` naming the block and the reason.

Stages: a new stage starts at a block that changes the width or has stride > 1; Zero
blocks keep their stage. Candidates: the `imagenet` preset's MBConv kernels × expands
(plus any other the file uses) and Zero where the block may be skipped.

Not carried: the input size (a net.config has none: `input_size`, default 224) and the
BatchNorm settings (`bn`; this project's BatchNorm is PyTorch's, momentum 0.1, eps 1e-5,
which an exported file states).

>>> from proxyless.space import get_space
>>> space = get_space("tiny")
>>> arch = Arch(space, [layer.candidates[0] for layer in space.layers()])
>>> back = arch_from_net_config(arch_to_net_config(arch), name="tiny", input_size=32)
>>> back.ops == arch.ops, back.space.stages == space.stages
(True, True)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latency.atomic import atomic_write_json

from .arch import Arch, ArchError
from .space import OpSpec, SearchSpace, StageSpec, make_divisible

NET_NAME = "ProxylessNASNets"
BLOCK_NAME = "MobileInvertedResidualBlock"
# What this project's BatchNorm is (torch defaults); the file's own `bn` is not imported.
TORCH_BN = {"momentum": 0.1, "eps": 1e-05}
_CONV_FLAGS = {
    "dilation": 1,
    "groups": 1,
    "bias": False,
    "has_shuffle": False,
    "use_bn": True,
    "act_func": "relu6",
    "dropout_rate": 0,
    "ops_order": "weight_bn_act",
}


def _err(where: str, reason: str) -> ArchError:
    return ArchError(f"net.config {where}: {reason}; this search space cannot express it")


def _get(d: Any, field: str, where: str) -> Any:
    if not isinstance(d, dict) or field not in d:
        raise ArchError(f"net.config {where}: missing field {field!r} (not a net.config?)")
    return d[field]


def _expect(d: dict[str, Any], where: str, **want: Any) -> None:
    """Fields that, when present, must have the value this space builds."""
    for field, value in want.items():
        if field in d and d[field] != value:
            raise _err(where, f"{field}={d[field]!r} (this space builds {field}={value!r})")


def _width(w: int, where: str) -> int:
    if make_divisible(w) != w:
        raise _err(where, f"width {w} is not a multiple of 8 (widths are rounded to 8)")
    return w


def _conv(d: Any, where: str, kernel: int, stride: int | None = None) -> tuple[int, int, int]:
    """(in, out, stride) of a `ConvLayer` that must be conv-BN-ReLU6 with `kernel`."""
    if _get(d, "name", where) != "ConvLayer":
        raise _err(where, f"a {d['name']} (only ConvLayer)")
    _expect(d, where, kernel_size=kernel, **_CONV_FLAGS)
    if stride is not None:
        _expect(d, where, stride=stride)
    ins, outs = _get(d, "in_channels", where), _get(d, "out_channels", where)
    return int(ins), _width(int(outs), where), int(d.get("stride", 1))


def _shortcut(block: dict[str, Any], where: str, residual: bool) -> None:
    sc = _get(block, "shortcut", where)
    if sc is not None and _get(sc, "name", f"{where}.shortcut") != "IdentityLayer":
        raise _err(where, f"shortcut {sc['name']} (only IdentityLayer)")
    if (sc is not None) != residual:
        has = "has an identity shortcut" if sc is not None else "has no shortcut"
        raise _err(
            where,
            f"{has}, but this space adds the residual exactly when stride is 1 and in == out",
        )


def arch_from_net_config(
    config: Any, name: str = "net_config", input_size: int = 224, source: str = "net.config"
) -> Arch:
    """The `Arch` of a `net.config` dict, in a `SearchSpace` read off the file (see module)."""
    try:
        return _import(config, name, input_size)
    except ArchError as e:
        raise ArchError(f"{source}: {e}") from None


def _import(config: Any, name: str, input_size: int) -> Arch:
    if _get(config, "name", "top level") != NET_NAME:
        raise _err("top level", f"network {config['name']!r} (only {NET_NAME})")
    in_ch, stem, stem_stride = _conv(_get(config, "first_conv", "top level"), "first_conv", 3)
    blocks = _get(config, "blocks", "top level")
    if not isinstance(blocks, list) or len(blocks) < 2:
        raise _err("blocks", "fewer than two blocks (a first block and searchable layers)")

    # The fixed first block: MBConv k3 e1 stride 1, stem -> first width.
    where = "blocks[0] (the first block)"
    conv = _block_conv(blocks[0], where)
    if conv["name"] != "MBInvertedConvLayer":
        raise _err(where, f"a {conv['name']} (the first block is a fixed MBConv k3 e1)")
    _expect(conv, where, in_channels=stem, kernel_size=3, expand_ratio=1, stride=1)
    first = _width(int(_get(conv, "out_channels", where)), where)
    _shortcut(blocks[0], where, stem == first)

    stages: list[list[int]] = []  # [width, depth, stride]
    ops: list[OpSpec] = []
    kernels, expands = list(SearchSpace.kernel_sizes), list(SearchSpace.expand_ratios)
    width = first
    for i, block in enumerate(blocks[1:], 1):
        where = f"blocks[{i}] (searchable layer {i - 1})"
        conv = _block_conv(block, where)
        stride = int(_get(conv, "stride", where))
        if conv["name"] == "ZeroLayer":
            if stride != 1 or not stages:
                raise _err(where, "a ZeroLayer where the block cannot be skipped")
            _shortcut(block, where, True)
            sc = block["shortcut"]
            _expect(sc, f"{where}.shortcut", in_channels=width, out_channels=width)
            out, op = width, OpSpec("zero")
        elif conv["name"] == "MBInvertedConvLayer":
            out = _width(int(_get(conv, "out_channels", where)), where)
            k, e = int(_get(conv, "kernel_size", where)), int(_get(conv, "expand_ratio", where))
            if k % 2 == 0 or e < 1:
                raise _err(where, f"kernel {k}, expand {e} (odd kernels, expand >= 1)")
            # Later versions of the layer (once-for-all) add these fields.
            _expect(conv, where, in_channels=width, use_se=False, act_func="relu6")
            if conv.get("mid_channels") not in (None, width * e):
                raise _err(where, f"mid_channels={conv['mid_channels']} (this space: in·expand)")
            kernels += [k] if k not in kernels else []
            expands += [e] if e not in expands else []
            _shortcut(block, where, stride == 1 and out == width)
            op = OpSpec("mb", k, e)
        else:
            raise _err(where, f"a {conv['name']} (only MBInvertedConvLayer or ZeroLayer)")
        if not stages or out != width or stride != 1:
            stages.append([out, 0, stride])
        stages[-1][1] += 1
        ops.append(op)
        width = out

    mix_in, head, _ = _conv(
        _get(config, "feature_mix_layer", "top level"), "feature_mix_layer", 1, 1
    )
    if mix_in != width:
        raise _err("feature_mix_layer", f"in_channels {mix_in} != last block's {width}")
    cls = _get(config, "classifier", "top level")
    where = "classifier"
    if _get(cls, "name", where) != "LinearLayer":
        raise _err(where, f"a {cls['name']} (only LinearLayer)")
    _expect(cls, where, in_features=head, bias=True, use_bn=False, act_func=None)
    space = SearchSpace(
        name=name,
        input_size=input_size,
        num_classes=int(_get(cls, "out_features", where)),
        stages=tuple(StageSpec(w, d, s) for w, d, s in stages),
        stem_width=stem,
        stem_stride=stem_stride,
        first_width=first,
        head_width=head,
        kernel_sizes=tuple(sorted(kernels)),
        expand_ratios=tuple(sorted(expands)),
        dropout=float(cls.get("dropout_rate") or 0.0),
        in_channels=in_ch,
    )
    return Arch(space, ops)


def _block_conv(block: Any, where: str) -> dict[str, Any]:
    if _get(block, "name", where) != BLOCK_NAME:
        raise _err(where, f"a {block['name']} (only {BLOCK_NAME})")
    conv = _get(block, "mobile_inverted_conv", where)
    _get(conv, "name", where)
    return conv


# --- export -------------------------------------------------------------------------------------
def _conv_layer(cin: int, cout: int, kernel: int, stride: int) -> dict[str, Any]:
    flags = dict(_CONV_FLAGS)
    return {
        "name": "ConvLayer",
        "kernel_size": kernel,
        "stride": stride,
        **{k: flags.pop(k) for k in ("dilation", "groups", "bias", "has_shuffle")},
        "in_channels": cin,
        "out_channels": cout,
        **flags,
    }


def _identity(c: int) -> dict[str, Any]:
    return {
        "name": "IdentityLayer",
        "in_channels": c,
        "out_channels": c,
        "use_bn": False,
        "act_func": None,
        "dropout_rate": 0,
        "ops_order": "weight_bn_act",
    }


def _block(cin: int, cout: int, op: OpSpec, stride: int, residual: bool) -> dict[str, Any]:
    conv: dict[str, Any] = (
        {"name": "ZeroLayer", "stride": stride}
        if op.is_zero
        else {
            "name": "MBInvertedConvLayer",
            "in_channels": cin,
            "out_channels": cout,
            "kernel_size": op.kernel,
            "stride": stride,
            "expand_ratio": op.expand,
        }
    )
    return {
        "name": BLOCK_NAME,
        "mobile_inverted_conv": conv,
        "shortcut": _identity(cin) if residual else None,
    }


def arch_to_net_config(arch: Arch) -> dict[str, Any]:
    """`arch` as the original code's `net.config` dict (Zero layers kept as `ZeroLayer`)."""
    s = arch.space
    stem, first = s.stem_channels, s.first_channels
    blocks = [_block(stem, first, OpSpec("mb", 3, 1), 1, stem == first)]
    blocks += [
        _block(layer.in_channels, layer.out_channels, op, layer.stride, layer.residual)
        for layer, op in zip(s.layers(), arch.ops, strict=True)
    ]
    return {
        "name": NET_NAME,
        "bn": dict(TORCH_BN),
        "first_conv": _conv_layer(s.in_channels, stem, 3, s.stem_stride),
        "feature_mix_layer": _conv_layer(s.last_channels, s.head_channels, 1, 1),
        "classifier": {
            "name": "LinearLayer",
            "in_features": s.head_channels,
            "out_features": s.num_classes,
            "bias": True,
            "use_bn": False,
            "act_func": None,
            "dropout_rate": s.dropout,
            "ops_order": "weight_bn_act",
        },
        "blocks": blocks,
    }


# --- files --------------------------------------------------------------------------------------
def is_net_config(data: Any) -> bool:
    """Whether parsed JSON looks like a net.config (the original code's network class)."""
    return isinstance(data, dict) and "blocks" in data and "first_conv" in data


def load_net_config(path: str | Path, name: str | None = None, input_size: int = 224) -> Arch:
    """Read a `net.config` file; the space is named after the file unless `name` is given."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArchError(f"cannot read net.config {str(path)!r}: {e}") from None
    return arch_from_net_config(data, name or path.stem, input_size, source=str(path))


def save_net_config(arch: Arch, path: str | Path) -> Path:
    """Write `arch` as a `net.config` (atomically) that the original code can build."""
    return atomic_write_json(path, arch_to_net_config(arch))


__all__ = [
    "arch_from_net_config",
    "arch_to_net_config",
    "is_net_config",
    "load_net_config",
    "save_net_config",
]
