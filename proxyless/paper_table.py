"""The ProxylessNAS paper's mobile latency table (`mobile_trim.yaml`, Google Pixel 1,
TensorFlow Lite, batch 1) as a latency table of this project.

The paper's keys name ops by TensorFlow scope and NHWC shapes; each maps to one of this
project's keys (`proxyless.plan`), so the table serves the `imagenet` space as is:

- `Conv-input:224x224x3-output:112x112x32` → `stem` (3×3, stride from the shapes);
- `expanded_conv-input:HxWxC-output:H'xW'xC'-expand:e-kernel:k-stride:s-idskip:r` →
  `mbconv` (the residual is `idskip`);
- `Conv_1-input:7x7x320-output:7x7x1280` (feature mix) → `head`;
- `Logits-input:7x7x1280-output:1000` (global pool + classifier) → `linear`. This project
  times the pool with the head conv and the classifier alone, the paper the other way
  round; a network's sum is the same.

Each entry keeps the file's `mean` (ms) as the statistic (in `ms`; the header's
protocol says so), its `count` (as `n`) and its `var` (as `var_ms2`); p10/p90 are the
normal approximation mean ∓ 1.2816·√var, since the file has no quantiles.

>>> str(paper_key("expanded_conv-input:14x14x80-output:14x14x80-expand:3-kernel:5"
...               "-stride:1-idskip:1"))
'mbconv_i80x14x14_o80_k5_e3_s1_r1'
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from latency.keys import OpKey
from latency.table import Entry, LatencyTable, TableError, TableHeader

from .space import conv_out_size

DEVICE = "Pixel 1"
BACKEND = "tflite"
Z90 = 1.2815515655446004  # standard normal 90% quantile
STATISTIC = (
    "mean (ms) as published with ProxylessNAS (mobile_trim.yaml); n = its count, var_ms2 = "
    "its variance; p10/p90 = mean -/+ 1.2816*sqrt(var) (normal approximation)"
)

_HWC = r"(\d+)x(\d+)x(\d+)"
_PATTERNS = {
    "stem": re.compile(rf"^Conv-input:{_HWC}-output:{_HWC}$"),
    "head": re.compile(rf"^Conv_1-input:{_HWC}-output:{_HWC}$"),
    "linear": re.compile(rf"^Logits-input:{_HWC}-output:(\d+)$"),
    "mbconv": re.compile(
        rf"^expanded_conv-input:{_HWC}-output:{_HWC}"
        r"-expand:(\d+)-kernel:(\d+)-stride:(\d+)-idskip:([01])$"
    ),
}


def paper_key(text: str) -> OpKey:
    """This project's key of one of the paper's keys; TableError names a key it cannot map."""
    for op, pattern in _PATTERNS.items():
        if m := pattern.match(text):
            return _key(op, [int(g) for g in m.groups()], text)
    raise TableError(
        f"paper table key {text!r} is none of Conv-, Conv_1-, Logits- or expanded_conv-"
        "input:HxWxC-output:...; is this the ProxylessNAS mobile table (mobile_trim.yaml)?"
    )


def _key(op: str, g: list[int], text: str) -> OpKey:
    h, w, c = g[:3]
    if op == "linear":
        return OpKey("linear", (c, 1, 1), g[3])
    h2, w2, c2 = g[3:6]
    if op == "head":
        return OpKey("head", (c, h, w), c2)
    stride = h // h2 if op == "stem" else g[8]
    if conv_out_size(h, stride) != h2 or conv_out_size(w, stride) != w2:
        raise TableError(f"paper table key {text!r}: output size does not follow stride {stride}")
    if op == "stem":
        return OpKey("stem", (c, h, w), c2, kernel=3, stride=stride)
    expand, kernel, idskip = g[6], g[7], g[9]
    return OpKey("mbconv", (c, h, w), c2, kernel, expand, stride, residual=bool(idskip))


def _entry(value: Any, key: str) -> Entry:
    if not isinstance(value, dict) or any(f not in value for f in ("mean", "var", "count")):
        raise TableError(f"paper table entry {key!r} needs mean, var and count; got {value!r}")
    mean, var, count = float(value["mean"]), float(value["var"]), int(value["count"])
    sd = math.sqrt(max(var, 0.0))
    return Entry(mean, mean - Z90 * sd, mean + Z90 * sd, count, var_ms2=var)


def import_paper_table(
    path: str | Path, device: str = DEVICE, backend: str = BACKEND
) -> LatencyTable:
    """The paper's YAML table (read with a safe loader) as a batch-1 float32 table."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as e:
        raise TableError(f"cannot read the paper's latency table {str(path)!r}: {e}") from None
    if not isinstance(data, dict) or not data:
        raise TableError(f"{str(path)!r} is not a mapping of keys to {{mean, var, count}}")
    header = TableHeader(
        device=device,
        backend=backend,
        batch=1,
        dtype="float32",
        date="unknown (published with ProxylessNAS, ICLR 2019)",
        versions={"source": path.name, "sha256": hashlib.sha256(raw).hexdigest()},
        protocol={"statistic": STATISTIC},
    )
    table = LatencyTable(header)
    for key, value in data.items():
        new = str(paper_key(str(key)))
        if new in table:
            raise TableError(f"{str(path)!r}: keys {key!r} and another both map to {new!r}")
        table.add(new, _entry(value, str(key)))
    return table
