"""The one latency predictor: a network's latency against a table, shaped like fvcore's
FlopCountAnalysis (`total`, `by_layer`, `by_op_type`, `missing_keys`).

A table's calibration (fitted on whole networks by validation, `latency.calibrate`) is
applied here and nowhere else: each layer costs ``a·entry + d_key`` (``d_key`` a per-key
correction, 0 for a `linear` calibration) and the network ``b`` on top, so per-layer costs
still add up to the total (the search relies on that to keep its expected latency linear).

>>> from latency.table import Entry, LatencyTable, TableHeader
>>> t = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
>>> t.add("stem_i3x8x8_o8_k3_e1_s2_r0", Entry(0.5, 0.4, 0.6, 9))
>>> a = LatencyAnalysis(t, [("stem", "stem_i3x8x8_o8_k3_e1_s2_r0"),
...                         ("b1", "mbconv_i8x4x4_o8_k3_e3_s1_r1")])
>>> a.by_layer(), a.missing_keys()
({'stem': 0.5, 'b1': None}, ['mbconv_i8x4x4_o8_k3_e3_s1_r1'])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from latency.errors import MissingKeyError, TableError
from latency.table import LatencyTable


@dataclass(frozen=True)
class Calibration:
    """``b + Σ (a·entry_k + d_k)`` over a network's keys; the identity when a table is used
    uncalibrated. `per_key_ms` holds the d_k (ms, absent keys: 0) of a `per_key` fit."""

    a: float = 1.0
    b: float = 0.0
    per_key_ms: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, table: LatencyTable, calibrated: bool | None = None) -> Calibration:
        """The table's calibration if `calibrated` (None: if the table has one), else identity."""
        cal = table.header.calibration
        if calibrated is None:
            calibrated = bool(cal)
        if not calibrated:
            return cls()
        if not cal:
            raise TableError(
                "a calibrated prediction was asked for, but this table has no calibration; "
                "run validation with a calibration split first, or use calibrated=False"
            )
        try:
            per_key = {str(k): float(v) for k, v in (cal.get("per_key_ms") or {}).items()}
            return cls(float(cal["a"]), float(cal["b"]), per_key)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(
                f"the table's calibration is malformed ({type(e).__name__}: {e}); it needs "
                'numbers "a" and "b" and optionally a "per_key_ms" mapping of key to ms. '
                'Set the header\'s "calibration" to null and re-fit it with proxyless-validate'
            ) from e

    def entry(self, key: str, ms: float) -> float:
        """One layer's calibrated ms: its table entry `ms`, scaled, plus its key's correction."""
        return self.a * ms + self.per_key_ms.get(key, 0.0)

    def total(self, entries: Iterable[tuple[str, float]]) -> float:
        """A whole network's calibrated ms from its (key, table ms) pairs."""
        return self.b + sum(self.entry(k, ms) for k, ms in entries)


class LatencyAnalysis:
    """Predicted latency of a network made of `layers`, (layer name, key) pairs.

    A layer that is skipped (Zero) is simply absent. Nothing raises at construction or in
    by_layer(); total() and check() raise MissingKeyError naming the keys and the command.
    `calibrated`: see `Calibration.of` (None: calibrated when the table has a calibration).
    """

    def __init__(
        self,
        table: LatencyTable,
        layers: Sequence[tuple[str, str]],
        calibrated: bool | None = None,
    ) -> None:
        self.table = table
        self.layers = [(name, str(key)) for name, key in layers]
        self.calibration = Calibration.of(table, calibrated)

    @classmethod
    def of_keys(
        cls, table: LatencyTable, keys: Iterable[str], calibrated: bool | None = None
    ) -> LatencyAnalysis:
        """A network known only by its keys (layers are named by position)."""
        return cls(table, [(str(i), str(k)) for i, k in enumerate(keys)], calibrated)

    def missing_keys(self) -> list[str]:
        return self.table.missing(key for _, key in self.layers)

    def check(self) -> None:
        """Raise MissingKeyError if the table lacks any key."""
        if missing := self.missing_keys():
            raise MissingKeyError(missing, self.table.header.profile_command)

    def by_layer(self) -> dict[str, float | None]:
        """ms per layer (calibrated entries); None where the table lacks the key."""
        e, cal = self.table.entries, self.calibration
        return {
            name: (cal.entry(key, e[key].ms) if key in e else None) for name, key in self.layers
        }

    def by_op_type(self) -> dict[str, float]:
        """ms per op type (the key's first word, calibrated like by_layer), known keys only."""
        e, cal = self.table.entries, self.calibration
        out: dict[str, float] = {}
        for _, key in self.layers:
            if key in e:
                op = key.split("_", 1)[0]
                out[op] = out.get(op, 0.0) + cal.entry(key, e[key].ms)
        return out

    def total(self) -> float:
        """Predicted ms of the whole network: ``b + Σ (a·entry + d_key)``."""
        self.check()
        e = self.table.entries
        return self.calibration.total((key, e[key].ms) for _, key in self.layers)
