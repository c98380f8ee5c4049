"""Candidate costs for the search: fvcore counts, latency tables, targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from latency.table import Entry, LatencyTable, TableHeader
from proxyless import latency_bridge as bridge
from proxyless.hardware import CostError, Hardware, HardwareConfig, layer_costs
from proxyless.objective import ObjectiveConfig, ObjectiveError
from proxyless.plan import fixed_parts
from proxyless.space import get_space


def _table(path: Path, device: str = "test-cpu", drop: str | None = None, ms: float = 0.1) -> Path:
    """A table for the tiny space where each key costs (its index + 1) · `ms` ms."""
    space = get_space("tiny")
    t = LatencyTable(TableHeader(device, "torch-cpu", 1, "float32", profile_command="make-it"))
    for i, key in enumerate(bridge.space_keys(space)):
        if str(key) != drop:
            t.add(str(key), Entry((i + 1) * ms, 0.0, 0.0, 5))
    t.save(path)
    return path


def test_params_costs_zero_and_fixed() -> None:
    space = get_space("tiny")
    costs = layer_costs(space, HardwareConfig(kind="params"))
    for layer, row in zip(space.layers(), costs.per_layer, strict=True):
        assert len(row) == len(layer.candidates)
        for op, c in zip(layer.candidates, row, strict=True):
            assert (c == 0.0) == op.is_zero
    # fixed = stem + first + head + classifier, all with parameters
    assert costs.fixed > 0
    assert costs.min_cost() < costs.max_cost()
    assert costs.cost_of(costs.min_indices()) == pytest.approx(costs.min_cost())


def test_flops_units_scale() -> None:
    space = get_space("tiny")
    m = layer_costs(space, HardwareConfig(kind="flops"))
    k = layer_costs(space, HardwareConfig(kind="flops", unit="KFLOPs"))
    assert k.min_cost() == pytest.approx(1000 * m.min_cost())
    with pytest.raises(CostError, match="not a unit"):
        HardwareConfig(kind="flops", unit="ms")


def test_lut_costs_match_table(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.json")
    costs = layer_costs(get_space("tiny"), HardwareConfig(kind="lut", table=str(path)))
    table = LatencyTable.load(path)
    fixed = sum(table.entries[str(p.key)].ms for p in fixed_parts(get_space("tiny")).values())
    assert costs.fixed == pytest.approx(fixed)
    us = layer_costs(get_space("tiny"), HardwareConfig(kind="lut", table=str(path), unit="us"))
    assert us.max_cost() == pytest.approx(1000 * costs.max_cost())


def test_lut_missing_key_names_key_and_command(tmp_path: Path) -> None:
    space = get_space("tiny")
    missing = str(bridge.space_keys(space)[5])
    path = _table(tmp_path / "t.json", drop=missing)
    with pytest.raises(CostError, match=missing) as err:
        layer_costs(space, HardwareConfig(kind="lut", table=str(path)))
    # the command that adds it to this table, not the one that built the table
    want = f"proxyless-profile space=tiny backend=torch-cpu threads=1 batch=1 out={path}"
    assert want in str(err.value) and "make-it" not in str(err.value)


def test_lut_from_another_device_is_refused(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.json", device="pixel-7")
    cfg = HardwareConfig(kind="lut", table=str(path), device="test-cpu")
    with pytest.raises(CostError, match="pixel-7"):
        layer_costs(get_space("tiny"), cfg)
    cfg.force = True
    assert layer_costs(get_space("tiny"), cfg).unit == "ms"


def test_lut_file_missing(tmp_path: Path) -> None:
    with pytest.raises(CostError, match="not found"):
        layer_costs(get_space("tiny"), HardwareConfig(kind="lut", table=str(tmp_path / "no.json")))


def _hardware(**cfg: float) -> Hardware:
    return Hardware.resolve(
        get_space("tiny"), HardwareConfig(kind="params", **cfg), ObjectiveConfig("add_abs")
    )


def test_target_below_minimum_names_the_minimum() -> None:
    costs = layer_costs(get_space("tiny"), HardwareConfig(kind="params"))
    low = costs.min_cost() * 0.9
    with pytest.raises(ObjectiveError, match=f"{costs.min_cost():.4g}"):
        _hardware(target=low)
    frac = _hardware(target_frac=0.5).target
    assert frac == pytest.approx((costs.min_cost() + costs.max_cost()) / 2)
    assert _hardware(target=50.0, target_frac=0.1).target == 50.0


def test_resumed_hardware_reuses_the_saved_costs() -> None:
    """A resumed run continues with the costs it started with: nothing is measured again."""
    first = _hardware(target_frac=0.5)
    saved = {
        **first.to_dict(),
        "per_layer": [[c + 1 for c in row] for row in first.costs.per_layer],
    }
    again = Hardware.resolve(
        get_space("tiny"), HardwareConfig(kind="lut"), ObjectiveConfig("add_abs"), saved=saved
    )
    assert again.costs.per_layer == saved["per_layer"] and again.target == first.target


def test_profile_measures_once_into_the_cache(tmp_path: Path) -> None:
    """hardware=profile profiles this machine into the cache dir; a second run measures nothing."""
    cfg = HardwareConfig(kind="profile", backend="torch-cpu", cache_dir=str(tmp_path), unit="us")
    costs = layer_costs(get_space("tiny"), cfg)
    (cached,) = tmp_path.glob("tiny-*_torch-cpu_*.json")
    stamp = cached.stat().st_mtime_ns
    again = layer_costs(get_space("tiny"), cfg)
    assert cached.stat().st_mtime_ns == stamp  # nothing re-measured, nothing re-written
    assert again.per_layer == costs.per_layer and costs.unit == "us" and costs.min_cost() > 0


def test_cached_table_without_a_speed_anchor_is_profiled_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache from before tables carried an anchor is set aside (kept) and profiled anew."""
    cfg = HardwareConfig(kind="profile", backend="torch-cpu", cache_dir=str(tmp_path), unit="us")
    layer_costs(get_space("tiny"), cfg)
    (cached,) = tmp_path.glob("tiny-*_torch-cpu_*.json")
    old = LatencyTable.load(cached)
    assert old.header.anchor_ms is not None
    old.header.anchor_ms = None  # as an older version wrote it
    old.save(cached)
    with caplog.at_level("WARNING", logger="proxyless"):
        layer_costs(get_space("tiny"), cfg)
    assert LatencyTable.load(cached).header.anchor_ms is not None
    aside = cached.with_name(cached.stem + ".unanchored.json")
    assert LatencyTable.load(aside).header.anchor_ms is None
    assert "has no speed anchor" in caplog.text and aside.name in caplog.text


def _calibrate(path: Path, a: float, b: float, fit_on: int = 2) -> Path:
    table = LatencyTable.load(path)
    table.header.calibration = {"kind": "linear", "a": a, "b": b, "fit_on": ["n"] * fit_on}
    table.save(path)
    return path


def test_calibrated_table_that_makes_costs_non_positive_is_refused(tmp_path: Path) -> None:
    """Issue 13: a fit from 2 networks (a=14.39, b=-2.985 ms) made the space's cheapest arch
    cost < 0 and the search then failed on a target nobody set."""
    path = _calibrate(_table(tmp_path / "t.json", ms=0.003), 14.39, -2.985)
    space = get_space("tiny")
    raw = layer_costs(space, HardwareConfig(kind="lut", table=str(path), calibrated=False))
    assert 14.39 * raw.min_cost() - 2.985 <= 0 < raw.min_cost()  # the situation
    cfg = HardwareConfig(kind="lut", table=str(path), unit="ms", target_frac=0.0)
    with pytest.raises(CostError) as err:
        Hardware.resolve(space, cfg, ObjectiveConfig(kind="add_abs"))
    msg = str(err.value)
    assert "calibration" in msg and "14.39·sum -2.985 ms" in msg and str(path) in msg
    assert "hardware.calibrated=false" in msg and '"calibration" to null' in msg
    assert raw.calibration is None


def test_calibrated_costs_say_so(tmp_path: Path) -> None:
    path = _calibrate(_table(tmp_path / "t.json"), 1.5, 0.25, fit_on=10)
    space = get_space("tiny")
    raw = layer_costs(space, HardwareConfig(kind="lut", table=str(path), calibrated=False))
    hw = Hardware.resolve(
        space,
        HardwareConfig(kind="lut", table=str(path), unit="us", target_frac=0.5),
        ObjectiveConfig(kind="add_abs"),
    )
    assert hw.costs.calibration == {
        "a": 1.5,
        "b_ms": 0.25,
        "per_key": 0,
        "fit_on": 10,
        "date": None,
    }
    assert hw.costs.min_cost() == pytest.approx(1000 * (1.5 * raw.min_cost() + 0.25))
    assert hw.target > 0 and "applied: a·sum + b with a=1.5, b=0.25 ms" in hw.describe()
    back = Hardware.resolve(space, HardwareConfig(), ObjectiveConfig(), saved=hw.to_dict())
    assert back.costs.calibration == hw.costs.calibration  # kept across a resume


def test_per_key_calibrated_costs_carry_each_keys_correction(tmp_path: Path) -> None:
    """A per-key fit corrects each candidate's cost by its own key's d (ms), on top of a·entry:
    the search's per-layer costs are exactly the predictor's calibrated entries."""
    path = _calibrate(_table(tmp_path / "t.json"), 1.5, 0.25, fit_on=10)
    space = get_space("tiny")
    keys = [str(k) for k in bridge.space_keys(space)]
    table = LatencyTable.load(path)
    table.header.calibration["kind"] = "per_key"
    table.header.calibration["per_key_ms"] = {k: 0.01 * (i + 1) for i, k in enumerate(keys)}
    table.save(path)
    raw = layer_costs(space, HardwareConfig(kind="lut", table=str(path), calibrated=False))
    fixed = layer_costs(space, HardwareConfig(kind="lut", table=str(path)))
    want, fixed_want = bridge.space_costs(
        space,
        lambda key: 1.5 * table.entries[str(key)].ms + 0.01 * (keys.index(str(key)) + 1),
        0.25,
    )
    flat = [c for layer in fixed.per_layer for c in layer]
    assert flat == pytest.approx([c for layer in want for c in layer])
    assert fixed.fixed == pytest.approx(fixed_want) and fixed.unit == "ms"
    assert flat != pytest.approx([c for layer in raw.per_layer for c in layer])
    assert fixed.calibration["per_key"] == len(keys)
    hw = Hardware.resolve(
        space,
        HardwareConfig(kind="lut", table=str(path), target_frac=0.5),
        ObjectiveConfig(kind="add_abs"),
    )
    assert f"and {len(keys)} per-key corrections" in hw.describe()


def test_missing_keys_hint_measures_exactly_them_into_the_users_table(tmp_path: Path) -> None:
    """Issue 13: a table lacking keys of the search's space named the command that built it
    (`proxyless-profile space=cifar … out=tables/cifar_cpu.json`: 0 keys measured) or the
    profile cache file, not the user's table. The printed command, run as printed, must add
    exactly the missing keys to the user's table, so the search then finds every key."""
    import shlex

    from hydra import compose, initialize_config_dir

    from latency.backends import get_backend
    from latency.protocol import Protocol
    from proxyless.cli import profile as profile_cli

    # the space a search builds from a 7-class grayscale 16x16 dataset
    space = get_space("tiny", input_size=16, in_channels=1, num_classes=7)
    keys = [str(k) for k in bridge.space_keys(space)]
    fast = Protocol(warmup=1, rounds=2, repeats=2, window_ms=0.5)
    header = TableHeader(
        **get_backend("torch-cpu").header_fields(),
        batch=1,
        dtype="float32",
        protocol=fast.to_dict(),
        profile_command="proxyless-profile space=cifar backend=torch-cpu out=tables/cifar_cpu.json",
    )
    table = LatencyTable(header)
    for i, key in enumerate(keys[3:]):
        table.add(key, Entry(0.01 * (i + 1), 0.0, 0.0, 1))
    path = tmp_path / "mine.json"
    table.save(path)

    cfg = HardwareConfig(kind="lut", table=str(path), unit="us", target_frac=0.5)
    with pytest.raises(CostError) as err:
        layer_costs(space, cfg)
    msg = str(err.value)
    assert all(k in msg for k in keys[:3]) and "cifar" not in msg
    command = msg.split("measure them with: ")[1].split("  (resumable")[0]
    argv = shlex.split(command)
    assert argv[0] == "proxyless-profile" and f"out={path}" in argv
    assert {"space=tiny", "resolution=16", "num_classes=7", "backend=torch-cpu"} <= set(argv)

    with initialize_config_dir(config_dir=profile_cli.config_dir(), version_base="1.3"):
        profile_cfg = compose("profile", overrides=argv[1:])
    done = profile_cli.run(profile_cfg, command)
    assert done["measured"] == 3 and done["table"] == str(path)

    after = LatencyTable.load(path)
    assert len(after) == len(keys) and not after.missing(keys)
    assert all(after.entries[k] == table.entries[k] for k in keys[3:])  # others untouched
    costs = layer_costs(space, cfg)  # the search now finds every key
    assert costs.min_cost() > 0
