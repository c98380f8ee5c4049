"""The header of a latency table: everything that makes two measurements comparable."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
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
    `calibration` an optional fit made by validation (`latency.calibrate`);
    `anchor_ms` the speed anchor's time when the table was measured (`latency.anchor`):
    later measurements against the table are rescaled to that speed.
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
    anchor_ms: float | None = None

    REQUIRED: ClassVar[tuple[str, ...]] = ("device", "backend", "batch", "dtype")

    def require(
        self,
        want: Mapping[str, Any],
        force: bool = False,
        *,
        source: str = "latency table",
        asked: str = "this run",
        fix: str = "profile a table with that setup, or pass force=True to use this one anyway",
    ) -> None:
        """The one compatibility policy: every field in `want` (None: any value) must equal
        this header's, unless `force`. A TableError names each difference and `fix`.

        >>> h = TableHeader("cpu", "torch-cpu", 1, "float32")
        >>> h.require({"batch": 2}, asked="the export")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        latency.errors.TableError: latency table was measured with batch 1, the export at batch 2...
        """
        if force:
            return
        diffs = [
            f"{_show(name, getattr(self, name))}, {asked} at {_show(name, value)}"
            + ("" if isinstance(value, dict) else f" ({name}={value!r})")
            for name, value in want.items()
            if value is not None and getattr(self, name) != value
        ]
        if diffs:
            raise TableError(f"{source} was measured with {'; '.join(diffs)}; {fix}")

    def copy(self) -> TableHeader:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> TableHeader:
        """Build from JSON; a missing required or an unknown field is a TableError naming it
        (an unknown field silently dropped would be a setting nobody applied)."""
        if not isinstance(data, dict):
            raise TableError(f"{source}: 'header' must be a JSON object, got {type(data).__name__}")
        missing = [name for name in cls.REQUIRED if name not in data]
        if missing:
            raise TableError(
                f"{source}: header lacks required field(s) {missing}; this file was not "
                "written by latency.table (or is damaged): re-create it with the profile command"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TableError(
                f"{source}: header has unknown field(s) {unknown} (known: {sorted(known)}); "
                "the file comes from another tool or version, or was edited: re-create it with "
                "the profile command"
            )
        return cls(**data)


def _show(name: str, value: Any) -> str:
    return f"{value} thread(s)" if name == "threads" else f"{name} {value!r}"
