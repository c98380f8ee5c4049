"""A latency table (LUT): per-op measurements on one device/backend/batch/dtype, as JSON.

The sum of a network's entries predicts the network's latency (`latency.predict`). A table
records how it was measured (header) so that a table from another device is never used by
mistake, and so a missing key can name the exact command that measures it.

>>> t = LatencyTable(TableHeader(device="cpu", backend="torch-cpu", batch=1, dtype="float32"))
>>> t.add("conv_i3x8x8_o8_k3_e1_s1_r0", Entry(ms=0.5, calls_p10_ms=0.4, calls_p90_ms=0.7, n=10))
>>> t.missing(["conv_i3x8x8_o8_k3_e1_s1_r0", "head_i8x1x1_o10_k1_e1_s1_r0"])
['head_i8x1x1_o10_k1_e1_s1_r0']
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from latency.atomic import atomic_write_json
from latency.errors import MissingKeyError, TableError
from latency.header import TableHeader

__all__ = ["Entry", "LatencyTable", "MissingKeyError", "TableError", "TableHeader"]


@dataclass(frozen=True)
class Entry:
    """One op's latency, named for what each field holds (`latency.protocol`):

    - `ms`: the protocol's statistic, the value predictions sum: a low quantile
      (`header.protocol["quantile"]`, 0.25 by default) over rounds of speed-corrected window
      minima. Not a median: it sits below most single calls by design.
    - `calls_p10_ms` / `calls_p90_ms`: the 10th / 90th percentile of all `n` speed-corrected
      single calls, the spread one call shows (so `calls_p10_ms > ms` is normal).
    - `var_ms2`: the variance, where the source gives one (an imported published table,
      whose `ms` is then its mean: the header's `protocol["statistic"]` says which).
    """

    ms: float
    calls_p10_ms: float
    calls_p90_ms: float
    n: int
    var_ms2: float | None = None  # variance, ms², where the source gives one

    # Field names of tables written before the rename (`ms` was called `median_ms`, though
    # it never was one). Old files keep loading; saving writes the new names.
    OLD_NAMES: ClassVar[dict[str, str]] = {
        "median_ms": "ms",
        "p10_ms": "calls_p10_ms",
        "p90_ms": "calls_p90_ms",
    }

    @classmethod
    def from_dict(cls, value: Any, where: str = "entry") -> Entry:
        """An entry from JSON, old field names (`median_ms`, `p10_ms`, `p90_ms`) included."""
        need = [f.name for f in fields(cls) if f.default is MISSING]
        known = {f.name for f in fields(cls)}
        if isinstance(value, dict):
            value = {cls.OLD_NAMES.get(k, k): v for k, v in value.items()}
        if not isinstance(value, dict) or any(n not in value for n in need):
            raise TableError(
                f"{where} must have fields {need}, got {value!r}; "
                "delete the entry and re-run the profile command to re-measure it"
            )
        return cls(**{n: (int if n == "n" else float)(value[n]) for n in known if n in value})


@dataclass
class LatencyTable:
    """Header + entries `{key: Entry}`; see the module docstring."""

    header: TableHeader
    entries: dict[str, Entry] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: str, entry: Entry) -> None:
        self.entries[str(key)] = entry

    def lookup(self, key: str) -> Entry:
        """The entry for `key`; MissingKeyError names the key and the profiling command."""
        try:
            return self.entries[str(key)]
        except KeyError:
            raise MissingKeyError([str(key)], self.header.profile_command) from None

    def missing(self, keys: Iterable[str]) -> list[str]:
        """Keys not in the table, deduplicated, in first-seen order."""
        return [k for k in dict.fromkeys(str(k) for k in keys) if k not in self.entries]

    def merge(self, other: LatencyTable) -> LatencyTable:
        """A new table with both tables' entries (`other` wins on conflicts).

        Only tables measured the same way may be merged, else the sum would mix devices.
        """
        same = ("backend", "device", "batch", "dtype")
        other.header.require(
            {name: getattr(self.header, name) for name in same},
            source="the table to merge",
            asked="this table",
            fix="merge only tables measured on the same device, backend, batch and dtype",
        )
        return LatencyTable(self.header.copy(), {**self.entries, **other.entries})

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "entries": {k: _entry_dict(v) for k, v in sorted(self.entries.items())},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON atomically (temp file + rename)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> LatencyTable:
        if not isinstance(data, dict) or "header" not in data or "entries" not in data:
            raise TableError(
                f"{source} is not a latency table: expected a JSON object with 'header' and "
                "'entries'; re-create it with the profile command"
            )
        header = TableHeader.from_dict(data["header"], source)
        entries = {
            key: Entry.from_dict(value, f"{source}: entry {key!r}")
            for key, value in data["entries"].items()
        }
        return cls(header, entries)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expect_backend: str | None = None,
        expect_device: str | None = None,
        force: bool = False,
        fix: str | None = None,
    ) -> LatencyTable:
        """Load a table; refuse one from another backend/device unless `force`
        (`TableHeader.require` checks any other field). `fix`: what the refusal tells the
        user to do, in the caller's terms (e.g. the CLI option that forces)."""
        path = Path(path)
        if not path.is_file():
            raise TableError(
                f"latency table {str(path)!r} not found; build it with the profile command "
                "(e.g. `proxyless-profile`) or point to an existing table file"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TableError(
                f"latency table {str(path)!r} is not valid JSON ({e}); "
                "restore it or delete it and re-run the profile command"
            ) from None
        table = cls.from_dict(data, str(path))
        table.header.require(
            {"backend": expect_backend, "device": expect_device},
            force,
            source=f"latency table {str(path)!r}",
            **({"fix": fix} if fix else {}),
        )
        return table


def _entry_dict(entry: Entry) -> dict[str, Any]:
    """An entry as JSON; optional fields only where set (tables stay as they were)."""
    return {k: v for k, v in asdict(entry).items() if v is not None}
