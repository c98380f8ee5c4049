"""The one predictor: totals, per-layer costs, missing keys, calibration in one place."""

from __future__ import annotations

import pytest

from latency.predict import LatencyAnalysis
from latency.table import Entry, LatencyTable, MissingKeyError, TableHeader


def test_latency_analysis() -> None:
    t = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32", profile_command="prof"))
    t.add("stem_i3x8x8_o8_k3_e1_s2_r0", Entry(0.5, 0.4, 0.6, 9))
    t.add("mbconv_i8x4x4_o8_k3_e3_s1_r1", Entry(0.25, 0.2, 0.3, 9))
    layers = [
        ("stem", "stem_i3x8x8_o8_k3_e1_s2_r0"),
        ("b1", "mbconv_i8x4x4_o8_k3_e3_s1_r1"),
        ("b2", "mbconv_i8x4x4_o8_k3_e3_s1_r1"),
    ]
    a = LatencyAnalysis(t, layers)
    assert a.total() == pytest.approx(1.0) and a.missing_keys() == []
    assert a.by_op_type() == {"stem": 0.5, "mbconv": 0.5}
    t.header.calibration = {"kind": "linear", "a": 2.0, "b": 1.0}
    assert LatencyAnalysis(t, layers, calibrated=True).total() == pytest.approx(3.0)
    b = LatencyAnalysis(t, [*layers, ("head", "head_i8x4x4_o16_k1_e1_s1_r0")])
    assert b.by_layer()["head"] is None and b.missing_keys() == ["head_i8x4x4_o16_k1_e1_s1_r0"]
    with pytest.raises(MissingKeyError, match="head_i8x4x4.*prof"):
        b.total()
