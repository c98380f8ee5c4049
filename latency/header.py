"""The header of a latency table: everything that makes two measurements comparable."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from latency.errors import TableError


def now_iso() -> str:
    """UTC timestamp, seconds precision: when a table was measured."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class TableHeader:
    """How, where and by what command a table was measured.

    `versions` holds runtime and library versions (torch, onnxruntime, python...);
    `protocol` the measurement protocol (warmup, rounds, repeats, statistic...);
    `calibration` an optional fit `measured ≈ a * sum + b` made by validation.
    """

    device: str
    backend: str
    batch: int
    dtype: str
    threads: int = 1
    versions: dict[str, str] = field(default_factory=dict)
    date: str = field(default_factory=now_iso)
    protocol: dict[str, Any] = field(default_factory=dict)
    profile_command: str = ""
    calibration: dict[str, Any] | None = None

    REQUIRED: ClassVar[tuple[str, ...]] = ("device", "backend", "batch", "dtype")

    def copy(self) -> TableHeader:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> TableHeader:
        """Build from JSON; a missing required field is a TableError naming it."""
        if not isinstance(data, dict):
            raise TableError(f"{source}: 'header' must be a JSON object, got {type(data).__name__}")
        missing = [name for name in cls.REQUIRED if name not in data]
        if missing:
            raise TableError(
                f"{source}: header lacks required field(s) {missing}; this file was not "
                "written by latency.table (or is damaged): re-create it with the profile command"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
