"""Canonical op signatures: the keys of a latency table.

A key names everything that changes an op's latency except batch size and dtype, which
live in the table header (one table = one batch size, one dtype, one device).

>>> key = OpKey("mbconv", (24, 56, 56), 24, kernel=5, expand=6, stride=1, residual=True)
>>> str(key)
'mbconv_i24x56x56_o24_k5_e6_s1_r1'
>>> OpKey.parse(str(key)) == key
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEY_RE = re.compile(
    r"^(?P<op>[a-z][a-z0-9]*)_i(?P<c>\d+)x(?P<h>\d+)x(?P<w>\d+)_o(?P<out>\d+)"
    r"_k(?P<k>\d+)_e(?P<e>\d+)_s(?P<s>\d+)_r(?P<r>[01])$"
)


@dataclass(frozen=True)
class OpKey:
    """Signature of one op: type, input C×H×W, output channels, kernel, expand, stride, residual.

    `op` is a short lowercase word: `mbconv` for searchable blocks, `stem`, `head`, … for the
    fixed parts of a network. Whoever builds networks decides which ops exist; this module
    only makes the name canonical and parseable.
    """

    op: str
    in_shape: tuple[int, int, int]
    out_channels: int
    kernel: int = 1
    expand: int = 1
    stride: int = 1
    residual: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]*", self.op):
            raise ValueError(f"op type must be a lowercase word without '_', got {self.op!r}")
        if len(self.in_shape) != 3:
            raise ValueError(f"in_shape must be (C, H, W), got {self.in_shape!r}")

    def __str__(self) -> str:
        c, h, w = self.in_shape
        return (
            f"{self.op}_i{c}x{h}x{w}_o{self.out_channels}_k{self.kernel}_e{self.expand}"
            f"_s{self.stride}_r{int(self.residual)}"
        )

    @classmethod
    def parse(cls, text: str) -> OpKey:
        """Inverse of `str(key)`; raises ValueError naming the malformed key."""
        m = _KEY_RE.match(text)
        if m is None:
            raise ValueError(
                f"malformed latency key {text!r}: expected "
                "'<op>_i<C>x<H>x<W>_o<out>_k<kernel>_e<expand>_s<stride>_r<0|1>'"
            )
        return cls(
            op=m["op"],
            in_shape=(int(m["c"]), int(m["h"]), int(m["w"])),
            out_channels=int(m["out"]),
            kernel=int(m["k"]),
            expand=int(m["e"]),
            stride=int(m["s"]),
            residual=m["r"] == "1",
        )
