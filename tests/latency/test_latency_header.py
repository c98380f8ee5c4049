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
