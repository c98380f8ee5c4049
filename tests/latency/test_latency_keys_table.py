"""Keys, tables: round trips, clear load errors, missing keys, merge, calibrated predict."""

from __future__ import annotations

import json

import pytest

from latency.backends import BACKENDS
from latency.keys import OpKey
from latency.predict import LatencyAnalysis
from latency.registry import Registry
from latency.table import Entry, LatencyTable, MissingKeyError, TableError, TableHeader

CMD = "proxyless-profile hardware=cpu table=t.json"


def make_table(backend: str = "torch-cpu", device: str = "cpu-x", **entries: float) -> LatencyTable:
    h = TableHeader(device=device, backend=backend, batch=1, dtype="float32", profile_command=CMD)
    t = LatencyTable(h)
    for k, v in entries.items():
        t.add(k, Entry(v, v * 0.9, v * 1.2, 10))
    return t


def test_key_round_trip() -> None:
    key = OpKey("mbconv", (24, 56, 56), 24, kernel=5, expand=6, stride=1, residual=True)
    assert str(key) == "mbconv_i24x56x56_o24_k5_e6_s1_r1"
    assert OpKey.parse(str(key)) == key
    with pytest.raises(ValueError, match="malformed latency key"):
        OpKey.parse("mbconv_24")


def test_save_load_round_trip(tmp_path) -> None:
    t = make_table(a=1.5, b=2.0)
    t.header.calibration = {"kind": "linear", "a": 1.1, "b": 0.2}
    path = t.save(tmp_path / "sub" / "t.json")
    back = LatencyTable.load(path, expect_backend="torch-cpu", expect_device="cpu-x")
    assert back == t
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temp file


def test_load_errors(tmp_path) -> None:
    with pytest.raises(TableError, match="not found"):
        LatencyTable.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TableError, match="not valid JSON"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps({"header": {"device": "x"}, "entries": {}}))
    with pytest.raises(TableError, match=r"lacks required field.*backend"):
        LatencyTable.load(bad)
    path = make_table(a=1.0).save(tmp_path / "t.json")
    with pytest.raises(TableError, match="force=True"):
        LatencyTable.load(path, expect_backend="ort-cpu")
    with pytest.raises(TableError, match="device"):
        LatencyTable.load(path, expect_device="Pixel 7")
    assert LatencyTable.load(path, expect_backend="ort-cpu", force=True).header.backend == (
        "torch-cpu"
    )


def test_missing_key_error_names_key_and_command() -> None:
    t = make_table(a=1.0)
    with pytest.raises(MissingKeyError) as info:
        t.lookup("conv_i3x8x8_o8_k3_e1_s1_r0")
    assert isinstance(info.value, KeyError)
    assert "conv_i3x8x8_o8_k3_e1_s1_r0" in str(info.value) and CMD in str(info.value)
    with pytest.raises(MissingKeyError, match="'zz'"):
        LatencyAnalysis.of_keys(t, ["a", "zz"]).total()


def test_missing_and_predict() -> None:
    t = make_table(a=1.0, b=2.5)
    assert t.missing(["a", "c", "d", "c"]) == ["c", "d"]
    assert LatencyAnalysis.of_keys(t, ["a", "b", "b"]).total() == pytest.approx(6.0)
    with pytest.raises(TableError, match="no calibration"):
        LatencyAnalysis.of_keys(t, ["a"], calibrated=True)
    t.header.calibration = {"kind": "linear", "a": 2.0, "b": 0.5}
    assert LatencyAnalysis.of_keys(t, ["a", "b"], calibrated=True).total() == pytest.approx(
        2.0 * 3.5 + 0.5
    )
    assert LatencyAnalysis.of_keys(t, ["a", "b"]).total() == pytest.approx(2.0 * 3.5 + 0.5)
    assert LatencyAnalysis.of_keys(t, ["a", "b"], calibrated=False).total() == pytest.approx(3.5)


def test_merge() -> None:
    merged = make_table(a=1.0, b=2.0).merge(make_table(b=3.0, c=4.0))
    assert {k: e.ms for k, e in merged.entries.items()} == {"a": 1.0, "b": 3.0, "c": 4.0}
    with pytest.raises(TableError, match="backend"):
        make_table(a=1.0).merge(make_table("ort-cpu", b=1.0))
    with pytest.raises(TableError, match="device"):
        make_table(a=1.0).merge(make_table(device="other", b=1.0))


def test_registry_refuses_duplicates_and_names_itself() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="already"):
        reg.register("a")(2)
    with pytest.raises(KeyError, match="thing registry"):
        reg.get("b")
    assert set(BACKENDS.names()) == {"torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda"}


def test_old_format_table_loads_and_is_saved_with_honest_names(tmp_path) -> None:
    """Issue 13: `median_ms` held a low quantile of window minima (below the calls' p10);
    the fields are renamed and a table written before the rename still loads."""
    old = {
        "header": {"device": "cpu-x", "backend": "ort-cpu", "batch": 1, "dtype": "float32"},
        "entries": {
            "a": {"median_ms": 0.10, "p10_ms": 0.12, "p90_ms": 0.20, "n": 35},
            "b": {"median_ms": 0.30, "p10_ms": 0.31, "p90_ms": 0.50, "n": 35},
        },
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    table = LatencyTable.load(path)
    assert table.entries["a"] == Entry(ms=0.10, calls_p10_ms=0.12, calls_p90_ms=0.20, n=35)
    assert LatencyAnalysis.of_keys(table, ["a", "b"]).total() == pytest.approx(0.40)
    table.save(path)
    saved = json.loads(path.read_text())["entries"]["a"]
    assert saved == {"ms": 0.10, "calls_p10_ms": 0.12, "calls_p90_ms": 0.20, "n": 35}
    assert LatencyTable.load(path) == table
    path.write_text(json.dumps({**old, "entries": {"a": {"median_ms": 0.1, "n": 3}}}))
    with pytest.raises(TableError, match=r"entry 'a' must have fields \['ms', 'calls_p10_ms'"):
        LatencyTable.load(path)
