"""One compatibility policy for every table check: `TableHeader.require`."""

from __future__ import annotations

import pytest

from latency.errors import TableError
from latency.header import TableHeader


def test_require_names_every_difference_and_the_fix() -> None:
    h = TableHeader("cpu", "torch-cpu", 1, "float32", threads=1)
    h.require({"backend": "torch-cpu", "device": None, "batch": 1})  # None: any value
    with pytest.raises(TableError) as e:
        h.require({"backend": "ort-cpu", "threads": 2, "batch": 1}, asked="validation", fix="FIX")
    msg = str(e.value)
    assert "backend 'torch-cpu', validation at backend 'ort-cpu' (backend='ort-cpu')" in msg
    assert "1 thread(s), validation at 2 thread(s) (threads=2)" in msg
    assert "batch" not in msg and msg.endswith("; FIX")
    h.require({"backend": "ort-cpu", "threads": 2}, force=True)  # force accepts any setup


def test_from_dict_rejects_unknown_fields_and_round_trips() -> None:
    h = TableHeader("cpu", "ort-cpu", 1, "float32", threads=2, calibration={"a": 1.0, "b": 0.0})
    assert TableHeader.from_dict(h.to_dict()) == h
    with pytest.raises(TableError, match=r"unknown field\(s\) \['thread'\].*re-create"):
        TableHeader.from_dict({**h.to_dict(), "thread": 4}, source="t.json")
    with pytest.raises(TableError, match=r"lacks required field\(s\) \['dtype'\]"):
        TableHeader.from_dict({k: v for k, v in h.to_dict().items() if k != "dtype"})
