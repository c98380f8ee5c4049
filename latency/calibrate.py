"""Calibrations fitted on whole networks: what a table of isolated blocks misses.

Two models, both a sum over a network's keys plus a constant, so the prediction of a
network stays linear in its layers (the search's expected latency relies on that):

- `linear`: ``measured ≈ a·sum + b``. The part of the gap every block shares: per-network
  overhead (framework dispatch, input copy: b) and a common factor (a).
- `per_key`: each key also gets its own correction, ``entry_k → a·entry_k + d_k``, fitted on
  the measured networks as a linear model over their key counts (a network is the sum of
  its kernels, as nn-Meter and LitePred-style predictors model it). Eager torch times a
  block alone with a warm cache and no neighbour; inside a network, how much that costs
  depends on the block (its weights' size, its input's layout), which one `a` cannot say.

A few dozen networks do not pin down ~70 free corrections, so the fit is a ridge toward
"no correction", relative to the entry (``d_k = r_k·entry_k``, penalty ``λ·Σ r_k²``; a and b
free). λ is picked by leave-one-out error on the fit networks alone (closed form, one-
standard-error rule) from a grid that includes λ = ∞, the plain linear fit: with too few
networks, or nothing key-specific to learn, it falls back to that by itself. Errors are
relative to the measured latency (weights 1/measured), the metric every validation figure
uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latency.metrics import fit_linear
from latency.predict import Calibration

MODELS = ("per_key", "linear")
# λ relative to the mean diagonal of the correction block of the normal equations; inf: linear.
LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, math.inf)
MIN_PER_KEY_NETWORKS = 4  # leave-one-out needs a few networks beyond a and b


def fit_calibration(
    model: str,
    networks: Sequence[Sequence[str]],
    entries: Mapping[str, float],
    measured: Sequence[float],
) -> tuple[Calibration, dict[str, Any]]:
    """Fit `model` on `networks` (each its list of table keys) measured at `measured` ms;
    `entries` the table's ms per key. Returns the calibration and what to report of the fit
    (`model`, and for `per_key` the chosen λ, the leave-one-out error of each λ tried)."""
    if model not in MODELS:
        raise ValueError(f"calibration model {model!r} unknown; choose one of {', '.join(MODELS)}")
    if len(networks) != len(measured):
        raise ValueError(f"{len(networks)} networks but {len(measured)} measurements")
    sums = [sum(entries[k] for k in keys) for keys in networks]
    if model == "linear" or len(networks) < MIN_PER_KEY_NETWORKS:
        a, b = fit_linear(sums, measured)
        return Calibration(a, b), {"model": "linear"}
    return _fit_per_key(networks, entries, np.asarray(measured, float))


def _fit_per_key(
    networks: Sequence[Sequence[str]], entries: Mapping[str, float], m: np.ndarray
) -> tuple[Calibration, dict[str, Any]]:
    keys = sorted({k for ks in networks for k in ks})
    col = {k: j for j, k in enumerate(keys)}
    e = np.array([entries[k] for k in keys], float)
    counts = np.zeros((len(networks), len(keys)))
    for i, ks in enumerate(networks):
        for k in ks:
            counts[i, col[k]] += 1
    z = counts * e  # ms each key contributes to each network
    w = 1.0 / m  # relative errors: every row scaled by 1/measured, target 1
    f = np.column_stack([np.ones(len(m)), z.sum(1), z]) * w[:, None]
    y = m * w
    gram = f.T @ f
    scale = float(np.trace(gram[2:, 2:])) / len(keys) or 1.0
    tried: dict[str, float] = {}
    fits: list[tuple[float, np.ndarray, np.ndarray]] = []  # (λ, coefficients, LOO residuals)
    for lam in reversed(LAMBDAS):  # from the plain line to the freest fit
        beta, loo = _ridge_loo(f, y, gram, lam * scale)
        a, r = beta[1], beta[2:]
        ok = a > 0 and np.all(a + r > 0) and np.all(np.isfinite(loo))  # entries stay positive
        tried[_label(lam)] = float(np.sqrt(np.mean(loo**2))) if ok else math.nan
        if ok:
            fits.append((lam, beta, loo))
    if not fits:  # no λ keeps every entry positive: fall back to the plain line
        a, b = fit_linear(z.sum(1), m)
        return Calibration(a, b), {"model": "linear", "loo_rmse_by_lambda": tried}
    # The one-standard-error rule: the simplest fit (largest λ) whose leave-one-out error is
    # within one standard error of the best one's; a freer fit must earn its parameters.
    sq = [loo**2 for _, _, loo in fits]
    i_min = int(np.argmin([s.mean() for s in sq]))
    limit = sq[i_min].mean() + sq[i_min].std() / math.sqrt(len(m))
    lam, beta, _ = next(fit for fit, s in zip(fits, sq, strict=True) if s.mean() <= limit + 1e-15)
    per_key = {k: float(beta[2 + j] * e[j]) for j, k in enumerate(keys) if beta[2 + j] != 0.0}
    info = {
        "model": "per_key" if per_key else "linear",
        "lambda": _label(lam),
        "loo_rmse_by_lambda": tried,  # relative error of each held-out fit network
    }
    return Calibration(float(beta[1]), float(beta[0]), per_key), info


def _ridge_loo(
    f: np.ndarray, y: np.ndarray, gram: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge on the correction columns (not on b, a), and its leave-one-out residuals from
    the hat matrix: residual_i / (1 - h_ii), no refitting. λ = ∞ drops the corrections."""
    cols = 2 if math.isinf(lam) else f.shape[1]
    fs = f[:, :cols]
    pen = np.zeros(cols)
    pen[2:] = lam
    inv = np.linalg.pinv(gram[:cols, :cols] + np.diag(pen))
    beta = np.zeros(f.shape[1])
    beta[:cols] = inv @ (fs.T @ y)
    h = np.einsum("ij,jk,ik->i", fs, inv, fs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return beta, (y - fs @ beta[:cols]) / (1.0 - h)


def _label(lam: float) -> str:
    return "inf" if math.isinf(lam) else f"{lam:g}"
