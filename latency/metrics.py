"""Agreement between predicted and measured latencies, a linear calibration, a plot.

>>> m = metrics([1.0, 2.0, 3.3], [1.0, 2.1, 3.0])
>>> m["n"], m["within_10pct"], m["within_5pct"], m["spearman"]
(3, 1.0, 0.6666666666666666, 1.0)
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float | int]:
    """Share within ±10% / ±5% of measured, Spearman ρ, MAPE (%), n. Errors are relative to
    the measured value, the ground truth."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    if p.shape != m.shape:
        raise ValueError(f"{p.size} predictions but {m.size} measurements")
    if p.size == 0:
        return {
            "n": 0,
            "within_10pct": float("nan"),
            "within_5pct": float("nan"),
            "spearman": float("nan"),
            "mape": float("nan"),
        }
    rel = np.abs(p - m) / m
    return {
        "n": int(p.size),
        "within_10pct": float(np.mean(rel <= 0.10 + 1e-12)),
        "within_5pct": float(np.mean(rel <= 0.05 + 1e-12)),
        "spearman": _spearman(p, m),
        "mape": float(100.0 * rel.mean()),
    }


def _spearman(p: np.ndarray, m: np.ndarray) -> float:
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(m) == 0:
        return float("nan")  # undefined: no ranking to compare
    from scipy.stats import spearmanr

    return float(spearmanr(p, m).statistic)


def fit_linear(predicted: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """Least squares `measured ≈ a * predicted + b`.

    Why linear, not per-op-type scales: what the sum misses is mostly per-network overhead
    (framework dispatch, input copy: the intercept) and a common factor (cold caches between
    ops, fusion: the slope). Op types co-occur in every network (same stem/head), so
    per-type scales are nearly collinear and over-fit the few networks one can measure.
    With one network, or no spread in predictions, only a scale is fitted.
    """
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    if p.size == 0:
        raise ValueError("cannot fit a calibration on zero networks")
    if p.size == 1 or np.ptp(p) == 0:
        return float(m.sum() / p.sum()), 0.0
    a, b = np.polyfit(p, m, 1)
    return float(a), float(b)


def plot_limits(*series: Sequence[float | None], margin: float = 0.08) -> tuple[float, float]:
    """One (lo, hi) for both axes that holds every finite value of every series, with a
    margin: a badly predicted network is the point the plot exists to show, so none may
    fall off it. Latencies are positive, so lo stays >= 0."""
    vals = np.asarray([v for s in series for v in s if v is not None], float)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    pad = margin * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1e-9)
    return max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad


def scatter_figure(
    predicted: Sequence[float],
    measured: Sequence[float],
    title: str = "",
    calibrated: Sequence[float | None] | None = None,
) -> Any:
    """Predicted vs measured with y = x and a ±10% band, axes covering every point; a bare
    matplotlib `Figure` (no pyplot: no display needed, the process' backend left alone)."""
    from matplotlib.figure import Figure

    m = np.asarray(measured, float)
    lo, hi = plot_limits(predicted, measured, calibrated or [])
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    xs = np.linspace(lo, hi, 2)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.85", label="±10%")
    ax.plot(xs, xs, "k--", lw=1, label="predicted = measured")
    ax.scatter(m, predicted, s=18, label="table sum")
    if calibrated is not None:  # NaN/None where a network was not scored (fit set)
        c = np.asarray([np.nan if v is None else v for v in calibrated], float)
        ok = np.isfinite(c)
        ax.scatter(m[ok], c[ok], s=18, marker="x", label="calibrated (held-out)")
    ax.set(
        xlabel="measured (ms)", ylabel="predicted (ms)", title=title, xlim=(lo, hi), ylim=(lo, hi)
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def scatter_plot(
    predicted: Sequence[float],
    measured: Sequence[float],
    path: str | os.PathLike[str],
    title: str = "",
    calibrated: Sequence[float | None] | None = None,
) -> Path:
    """`scatter_figure` as a PNG, written atomically."""
    from latency.atomic import atomic_write_bytes

    fig = scatter_figure(predicted, measured, title, calibrated)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return atomic_write_bytes(path, buf.getvalue())
