"""Validation: metrics on hand-made numbers, calibration never scored on its fit set,
and one real end-to-end run writing JSON + PNG."""

from __future__ import annotations

import json

import pytest
from torch import nn

from latency.metrics import fit_linear, metrics, scatter_figure, scatter_plot
from latency.predict import LatencyAnalysis
from latency.profile import profile
from latency.table import Entry, LatencyTable, TableHeader
from latency.validate import MIN_FIT_NETWORKS, Network, split_for_calibration, validate

MEASURED = {"n1": 1.05, "n2": 2.2, "n3": 4.0, "n4": 5.0}


class FakeBackend:
    name = "torch-cpu"


def fake_measure(factor: list[float]):
    """First call returns MEASURED, the second MEASURED × 1.1 (a noisy repeat)."""

    def measure(builders, backend, protocol, progress=True, prepared=None, stash=None):
        f = factor.pop(0)
        return {k: Entry(MEASURED[k] * f, 0.0, 0.0, 1) for k in builders}

    return measure


def hand_table() -> LatencyTable:
    t = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    for k, v in {"k1": 1.0, "k2": 2.0, "k3": 3.0}.items():
        t.add(k, Entry(v, v, v, 1))
    return t


NETS = [
    Network("n1", None, ["k1"]),
    Network("n2", None, ["k2"]),
    Network("n3", None, ["k1", "k2"]),
    Network("n4", None, ["k3", "k3"]),
]


def test_metrics_hand_computed() -> None:
    m = metrics([1.0, 2.0, 3.0, 6.0], [1.05, 2.2, 4.0, 5.0])
    assert m["n"] == 4 and m["within_10pct"] == 0.5 and m["within_5pct"] == 0.25
    assert m["spearman"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx(100 * (0.05 / 1.05 + 0.2 / 2.2 + 1 / 4 + 1 / 5) / 4)
    assert metrics([1.0, 2.0], [2.0, 1.0])["spearman"] == pytest.approx(-1.0)
    assert fit_linear([1.0, 6.0], [1.05, 5.0]) == pytest.approx((0.79, 0.26))
    assert fit_linear([2.0], [3.0]) == pytest.approx((1.5, 0.0))


def test_validate_with_calibration_and_noise_floor(tmp_path) -> None:
    table = hand_table()
    s = validate(
        table,
        NETS,
        FakeBackend(),
        calibrate_on=["n1", "n4"],
        out_dir=tmp_path,
        measure=fake_measure([1.0, 1.1]),
        progress=False,
        min_fit_networks=2,  # the arithmetic on four hand-made networks
    )
    assert (s["n"], s["within_10pct"], s["within_5pct"]) == (4, 0.5, 0.25)
    nf = s["noise_floor"]
    assert (nf["within_10pct"], nf["within_5pct"], nf["spearman"]) == (1.0, 0.0, 1.0)
    assert nf["mape"] == pytest.approx(100 * 0.1 / 1.1)
    cal = s["calibrated"]
    assert cal["fit_on"] == ["n1", "n4"] and cal["scored_on"] == ["n2", "n3"] and cal["n"] == 2
    a, b = 0.79, 0.26
    want = 100 * (abs(a * 2 + b - 2.2) / 2.2 + abs(a * 3 + b - 4.0) / 4.0) / 2
    assert cal["mape"] == pytest.approx(want)
    assert cal["raw_same_networks"]["mape"] == pytest.approx(100 * (0.2 / 2.2 + 0.25) / 2)
    # worse than the raw sum on the held-out networks: reported, not kept
    assert not cal["accepted"] and "worse than the raw sum" in cal["refused"]
    assert table.header.calibration is None
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["calibrated"]["scored_on"] == ["n2", "n3"]
    assert (tmp_path / "validation.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("seed", range(5))
def test_calibration_split_is_disjoint(seed) -> None:
    names = [f"n{i}" for i in range(7)]
    fit = split_for_calibration(names, 0.4, seed)
    assert len(fit) == 3 and set(fit) < set(names)
    s = validate(
        hand_table(),
        NETS,
        FakeBackend(),
        calibrate_on=0.5,
        seed=seed,
        noise_floor=False,
        measure=fake_measure([1.0]),
        progress=False,
    )
    c = s["calibrated"]
    assert not set(c["fit_on"]) & set(c["scored_on"])
    assert set(c["fit_on"]) | set(c["scored_on"]) == set(MEASURED)
    with pytest.raises(ValueError, match="leave some"):
        validate(
            hand_table(),
            NETS,
            FakeBackend(),
            calibrate_on=list(MEASURED),
            noise_floor=False,
            measure=fake_measure([1.0]),
            progress=False,
        )


def test_validate_end_to_end_torch_cpu(items, fast, make_conv, tmp_path) -> None:
    (k1, b1), (k2, b2), (k3, b3) = make_conv(2, 4), make_conv(4, 8), make_conv(8, 8)
    table = profile({k1: b1, k2: b2, k3: b3}, "torch-cpu", protocol=fast, progress=False)

    def chain(*builders):
        def build():
            mods = [b()[0] for b in builders]
            return nn.Sequential(*mods), builders[0]()[1]

        return build

    nets = [
        Network("a", chain(b1, b2), [k1, k2]),
        Network("b", chain(b1, b2, b3), [k1, k2, k3]),
        Network("c", chain(b1, b2, b3, b3), [k1, k2, k3, k3]),
    ]
    s = validate(table, nets, "torch-cpu", calibrate_on=["a"], out_dir=tmp_path, progress=False)
    assert s["n"] == 3 and 0 <= s["within_10pct"] <= 1 and s["noise_floor"]["n"] == 3
    assert s["calibrated"]["scored_on"] == ["b", "c"]
    assert (tmp_path / "validation.png").is_file() and (tmp_path / "validation.json").is_file()


def line_nets(n: int, noise: float = 0.02):
    """n one-key networks, raw sums 1, 1.5, 2, ...; measured = 1.3·raw + 0.2 ± noise."""
    table = LatencyTable(TableHeader("cpu", "torch-cpu", 1, "float32"))
    nets, truth = [], {}
    for i in range(n):
        raw = 1.0 + 0.5 * i
        table.add(f"k{i}", Entry(raw, raw, raw, 1))
        nets.append(Network(f"n{i:02d}", None, [f"k{i}"]))
        truth[f"n{i:02d}"] = (1.3 * raw + 0.2) * (1 + noise * (-1) ** i)

    def measure(builders, backend, protocol, progress=True, prepared=None, stash=None):
        return {k: Entry(truth[k], 0.0, 0.0, 1) for k in builders}

    return table, nets, measure, truth


def test_calibration_fitted_on_too_few_networks_is_not_kept() -> None:
    """Issue 13: n_archs=20 calibrate=0.1 fitted on 2 networks and saved the fit anyway."""
    table, nets, measure, _ = line_nets(20)
    s = validate(
        table,
        nets,
        FakeBackend(),
        calibrate_on=0.1,
        noise_floor=False,
        measure=measure,
        progress=False,
    )
    cal = s["calibrated"]
    assert len(cal["fit_on"]) == 2 and cal["n"] == 18  # still reported, with its numbers
    assert not cal["accepted"]
    assert f"fewer than the {MIN_FIT_NETWORKS}" in cal["refused"] and "n_archs" in cal["refused"]
    assert table.header.calibration is None
    one = validate(
        *line_nets(2)[:2],
        FakeBackend(),
        calibrate_on=0.5,
        noise_floor=False,
        measure=line_nets(2)[2],
        progress=False,
    )  # n_archs=2 calibrate=0.5: a fit on one network
    assert len(one["calibrated"]["fit_on"]) == 1 and not one["calibrated"]["accepted"]


def test_calibration_worse_than_raw_on_held_out_networks_is_not_kept() -> None:
    table, nets, _, truth = line_nets(12)
    fit_on = [n.name for n in nets[:MIN_FIT_NETWORKS]]
    raw = {n.name: table.entries[n.keys[0]].ms for n in nets}
    # the fit set runs at 2x the table, the held-out networks exactly as the table says
    measured = {k: (2 * raw[k] if k in fit_on else raw[k]) for k in truth}

    def measure(builders, backend, protocol, progress=True, prepared=None, stash=None):
        return {k: Entry(measured[k], 0.0, 0.0, 1) for k in builders}

    table.header.calibration = {"kind": "linear", "a": 1.1, "b": 0.0, "fit_on": ["x"]}
    s = validate(
        table,
        nets,
        FakeBackend(),
        calibrate_on=fit_on,
        noise_floor=False,
        measure=measure,
        progress=False,
    )
    assert (
        not s["calibrated"]["accepted"] and "worse than the raw sum" in s["calibrated"]["refused"]
    )
    assert table.header.calibration["a"] == 1.1  # an earlier calibration is left alone


def test_calibration_on_enough_networks_that_beats_raw_is_kept() -> None:
    table, nets, measure, _ = line_nets(20)
    s = validate(
        table,
        nets,
        FakeBackend(),
        calibrate_on=0.5,
        noise_floor=False,
        measure=measure,
        progress=False,
    )
    cal = s["calibrated"]
    assert len(cal["fit_on"]) == 10 and cal["accepted"] and cal["refused"] is None
    assert cal["mape"] < cal["raw_same_networks"]["mape"]
    assert table.header.calibration["a"] == pytest.approx(1.3, rel=0.05)
    assert table.header.calibration["fit_on"] == cal["fit_on"]
    a, b = cal["a"], cal["b"]
    assert LatencyAnalysis.of_keys(table, ["k3"]).total() == pytest.approx(a * 2.5 + b)


def test_scatter_plot_axes_hold_every_point(tmp_path) -> None:
    """Issue 13: the axes were clipped to measured ±20%, so badly predicted networks (what
    the plot exists to show) fell off the chart."""
    measured = [1.0, 1.2, 1.5, 2.0]
    predicted = [0.3, 1.25, 6.0, 2.1]  # 3.3x under and 4x over
    calibrated = [None, 1.1, 9.0, None]
    fig = scatter_figure(predicted, measured, calibrated=calibrated)
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for x, y in [*zip(measured, predicted), (1.2, 1.1), (1.5, 9.0)]:
        assert x0 < x < x1 and y0 < y < y1, (x, y)
    assert (x0, x1) == (y0, y1) and x0 >= 0  # square: y = x is the diagonal
    line = [ln for ln in ax.get_lines() if ln.get_label() == "predicted = measured"][0]
    assert list(line.get_xdata()) == list(line.get_ydata()) == [x0, x1]  # y = x end to end
    band = [c for c in ax.collections if c.get_label() == "±10%"][0]
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(0.9 * x0) and max(ys) == pytest.approx(1.1 * x1)
    path = scatter_plot(predicted, measured, tmp_path / "v.png", calibrated=calibrated)
    assert path.read_bytes()[:4] == b"\x89PNG"
