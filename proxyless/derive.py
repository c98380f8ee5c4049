"""Deriving the final arch: the most probable one that meets the cost target.

Why. The search drives the *expected* cost E_α[cost] to the target, but argmax per layer can
land far from it: on the clutter benchmark, with α still spread, argmax archs came out
16–38 % below their targets (many Zero layers win their argmax by a hair), wasting latency
budget the user paid for. The arch a user wants is the one the search believes in most
among those that meet the budget: maximise Σ_l log p_l(op_l) subject to
|cost − target| ≤ tolerance · target — a knapsack over layers, solved by dynamic
programming over cost bins. When argmax already meets the window it is the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BINS = 4000  # cost resolution: (upper bound of the window) / BINS


def most_probable_within(
    log_probs: Sequence[Sequence[float]],
    costs: Sequence[Sequence[float]],
    fixed: float,
    low: float,
    high: float,
) -> list[int]:
    """Per-layer indices maximising Σ log p subject to low ≤ fixed + Σ cost ≤ high.

    Exact for costs on a grid of high/BINS; finer differences can only cost a near-tie.
    If no arch falls in the window: the most expensive arch under it (most probable among
    equals), or the cheapest arch if all are over it — the caller always gets an arch and
    can report the miss.
    """
    if len(log_probs) != len(costs):
        raise ValueError(f"{len(log_probs)} layers of probabilities but {len(costs)} of costs")
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got [{low}, {high}]")
    if fixed < 0 or any(min(c) < 0 for c in costs):
        raise ValueError("costs must be >= 0 (a calibrated table with a negative offset?)")
    width = max(high, 1e-12) / BINS
    n_bins = BINS + 1  # bin b holds partial costs in [b·width, (b+1)·width); above high: dropped
    start = int(fixed / width)
    if start >= n_bins:  # the fixed part alone is over the window
        return _cheapest(log_probs, costs)
    # Per bin: best Σ log p so far, its exact cost; per layer a back-pointer table.
    best = np.full(n_bins, -np.inf)
    exact = np.zeros(n_bins)
    best[start], exact[start] = 0.0, fixed
    back: list[np.ndarray] = []
    for lp, c in zip(log_probs, costs, strict=True):
        alive = np.flatnonzero(np.isfinite(best))
        lp_arr, c_arr = np.asarray(lp, dtype=np.float64), np.asarray(c, dtype=np.float64)
        # every (previous bin, candidate) pair at once
        prev = np.repeat(alive, len(c_arr))
        cand = np.tile(np.arange(len(c_arr)), len(alive))
        tot = exact[prev] + c_arr[cand]
        score = best[prev] + lp_arr[cand]
        bins = (tot / width).astype(np.int64)
        keep = (bins < n_bins) & np.isfinite(score)
        prev, cand, tot, score, bins = prev[keep], cand[keep], tot[keep], score[keep], bins[keep]
        order = np.lexsort((-score, bins))  # per bin, the best score first
        first = order[np.unique(bins[order], return_index=True)[1]]
        best = np.full(n_bins, -np.inf)
        exact = np.zeros(n_bins)
        choice = np.full((n_bins, 2), -1, dtype=np.int64)  # (candidate, previous bin)
        best[bins[first]], exact[bins[first]] = score[first], tot[first]
        choice[bins[first], 0], choice[bins[first], 1] = cand[first], prev[first]
        back.append(choice)
    finite = np.isfinite(best)
    feasible = np.flatnonzero(finite & (exact >= low - 1e-9) & (exact <= high + 1e-9))
    if len(feasible):
        end = int(feasible[np.argmax(best[feasible])])
    elif not finite.any():  # every arch costs more than `high`
        return _cheapest(log_probs, costs)
    else:  # every arch reachable under `high` is below `low`: the closest, most probable
        reachable = np.flatnonzero(finite)
        order = np.lexsort((-best[reachable], low - exact[reachable]))
        end = int(reachable[order[0]])
    path: list[int] = []
    for choice in reversed(back):
        j, end = (int(v) for v in choice[end])
        path.append(j)
    return path[::-1]


def _cheapest(log_probs: Sequence[Sequence[float]], costs: Sequence[Sequence[float]]) -> list[int]:
    """Cheapest candidate per layer (ties: most probable) among those with a finite log
    probability (a pruned candidate has −inf): the closest arch to a window that every arch
    overshoots."""
    return [
        min(range(len(c)), key=lambda j: (not np.isfinite(lp[j]), c[j], -lp[j]))
        for lp, c in zip(log_probs, costs, strict=True)
    ]
