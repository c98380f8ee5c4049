"""Per-key calibration: recovers key-specific gaps a single scale cannot, falls back to the
plain line when there is nothing key-specific to learn, keeps every entry positive, and is
applied by the one predictor (validation, search costs) exactly as fitted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latency.calibrate import LAMBDAS, fit_calibration
from latency.errors import TableError
from latency.predict import Calibration, LatencyAnalysis
from latency.table import Entry, LatencyTable, TableHeader
from latency.validate import Network, validate

KEYS = [f"k{i}" for i in range(12)]
ENTRIES = {k: 0.5 + 0.25 * i for i, k in enumerate(KEYS)}
# Inside a network keys k0..k3 cost 1.6x their table entry, the rest 1.1x; 0.3 ms overhead.
FACTOR = {k: (1.6 if i < 4 else 1.1) for i, k in enumerate(KEYS)}


def sampled(n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [list(rng.choice(KEYS, size=rng.integers(3, 9), replace=True)) for _ in range(n)]


def truth(keys: list[str], noise: float = 0.0, rng=None) -> float:
    ms = 0.3 + sum(FACTOR[k] * ENTRIES[k] for k in keys)
    return ms * (1.0 + noise * rng.standard_normal()) if noise else ms


def rel_err(cal: Calibration, nets: list[list[str]]) -> float:
    pred = [cal.total((k, ENTRIES[k]) for k in ks) for ks in nets]
    return float(np.mean([abs(p - truth(ks)) / truth(ks) for p, ks in zip(pred, nets)]))


def test_per_key_fit_learns_what_one_scale_cannot() -> None:
    rng = np.random.default_rng(0)
    fit_nets, held_out = sampled(60, 1), sampled(200, 2)
    measured = [truth(ks, 0.01, rng) for ks in fit_nets]
    per_key, info = fit_calibration("per_key", fit_nets, ENTRIES, measured)
    linear, _ = fit_calibration("linear", fit_nets, ENTRIES, measured)
    assert info["model"] == "per_key" and info["lambda"] != "inf"
    assert rel_err(linear, held_out) > 0.03  # one scale misses the 1.6x keys
    assert rel_err(per_key, held_out) < rel_err(linear, held_out) / 3
    # the corrected entries approach the truth (a·e + d ≈ factor·e)
    for k in KEYS:
        assert per_key.entry(k, ENTRIES[k]) == pytest.approx(FACTOR[k] * ENTRIES[k], rel=0.15)


def test_per_key_fit_falls_back_to_the_line_when_gaps_are_common() -> None:
    nets = sampled(40, 3)
    measured = [1.25 * sum(ENTRIES[k] for k in ks) + 0.4 for ks in nets]
    cal, info = fit_calibration("per_key", nets, ENTRIES, measured)
    assert info["model"] == "linear" and info["lambda"] == "inf" and not cal.per_key_ms
    assert (cal.a, cal.b) == pytest.approx((1.25, 0.4))
    assert set(info["loo_rmse_by_lambda"]) == {
        ("inf" if math.isinf(x) else f"{x:g}") for x in LAMBDAS
    }
    few, info = fit_calibration("per_key", nets[:3], ENTRIES, measured[:3])
    assert info == {"model": "linear"}  # too few for leave-one-out: the two-parameter line


def test_per_key_fit_never_makes_an_entry_negative() -> None:
    """k0 sits in every network beside a key that costs far less in context: an unchecked
    fit may push one entry below zero to explain the other."""
    nets = [["k0", "k1"] * (i % 3 + 1) + ["k5"] * (i % 2) for i in range(20)]
    measured = [0.05 * ks.count("k0") + 2.0 * ks.count("k5") + 0.1 for ks in nets]
    cal, info = fit_calibration("per_key", nets, ENTRIES, measured)
    for k in {"k0", "k1", "k5"}:
        assert cal.entry(k, ENTRIES[k]) > 0, (k, info)


def test_unknown_model_and_mismatched_lengths_are_named() -> None:
    with pytest.raises(ValueError, match="per_key, linear"):
        fit_calibration("cubic", [["k0"]], ENTRIES, [1.0])
    with pytest.raises(ValueError, match="2 networks but 1"):
        fit_calibration("linear", [["k0"], ["k1"]], ENTRIES, [1.0])


def test_validation_stores_the_per_key_fit_and_the_predictor_applies_it() -> None:
    table = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    for k, v in ENTRIES.items():
        table.add(k, Entry(v, v, v, 1))
    nets = [Network(f"n{i:03d}", None, ks) for i, ks in enumerate(sampled(120, 4))]
    measured = {n.name: truth(list(n.keys)) for n in nets}

    def measure(builders, backend, protocol, progress=True, prepared=None, stash=None):
        return {k: Entry(measured[k], 0.0, 0.0, 1) for k in builders}

    class Torch:
        name = "torch-cpu"

    s = validate(
        table, nets, Torch(), calibrate_on=0.5, noise_floor=False, measure=measure, progress=False
    )
    cal = s["calibrated"]
    assert cal["accepted"] and cal["model"] == "per_key" and cal["per_key_corrections"] == 12
    assert cal["within_10pct"] == 1.0 and cal["raw_same_networks"]["within_10pct"] < 0.5
    stored = table.header.calibration
    assert stored["kind"] == "per_key" and set(stored["per_key_ms"]) == set(KEYS)
    for n in nets:  # the predictor gives what validation scored, for every network
        want = stored["b"] + sum(stored["a"] * ENTRIES[k] + stored["per_key_ms"][k] for k in n.keys)
        assert LatencyAnalysis.of_keys(table, n.keys).total() == pytest.approx(want)
    layers = LatencyAnalysis.of_keys(table, ["k0", "k5"]).by_layer()
    assert layers["0"] == pytest.approx(stored["a"] * ENTRIES["k0"] + stored["per_key_ms"]["k0"])
    linear = validate(
        table,
        nets,
        Torch(),
        calibrate_on=0.5,
        noise_floor=False,
        measure=measure,
        progress=False,
        model="linear",
    )["calibrated"]
    assert linear["model"] == "linear" and cal["mape"] < linear["mape"] / 3
    assert cal["linear_same_networks"] == {k: linear[k] for k in cal["linear_same_networks"]}


def test_a_malformed_stored_calibration_is_one_clear_error() -> None:
    table = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    table.add("k0", Entry(1.0, 1.0, 1.0, 1))
    table.header.calibration = {"kind": "per_key", "a": 1.0, "b": 0.0, "per_key_ms": ["k0"]}
    with pytest.raises(TableError, match="per_key_ms.*proxyless-validate"):
        LatencyAnalysis.of_keys(table, ["k0"]).total()
