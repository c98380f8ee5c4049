"""What a ground truth rewards at equal latency: a linear fit of accuracy on arch features.

Reads rows files of `benchmarks/search_quality.py` and fits, per file, the ground-truth archs'
mean accuracy on their cost and a few counts — Zero layers, Zero in each layer, e6 and k7 ops —
by least squares. Why: the search keeps dropping one layer (Zero in layer 2 of the tiny space),
and the coefficient says what that costs at equal latency, which neither α nor the supernet's
inherited accuracy shows.

    PYTHONPATH=. python benchmarks/ground_truth_fit.py \
        benchmarks/results/search_quality_rows_gt16.jsonl \
        benchmarks/results/search_quality_rows_xeon_gt.jsonl \
        benchmarks/results/search_quality_rows_gt5.jsonl

One JSON line per file: coefficients in accuracy points (per unit of cost for `cost`) and the
residual std.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from percentile_ceiling import read_rows  # the script's own folder is on sys.path


def features(arch: list[str], cost: float, zero_layer: int) -> list[float]:
    return [
        1.0,
        cost,
        sum(op == "zero" for op in arch),
        float(arch[zero_layer] == "zero"),
        sum("_e6" in op for op in arch),
        sum("_k7" in op for op in arch),
    ]


NAMES = ("cost", "zero_layers", "zero_in_layer", "e6_ops", "k7_ops")


def fit(rows: list[dict[str, Any]], zero_layer: int) -> dict[str, Any]:
    """Least-squares coefficients (accuracy points) of the ground-truth rows' mean accuracy."""
    gt = [r for r in rows if r.get("row") == "ground_truth"]
    if len(gt) <= len(NAMES) + 1:
        raise SystemExit(f"{len(gt)} ground-truth archs: too few for {len(NAMES) + 1} terms")
    x = np.array([features(r["arch"], r["cost"], zero_layer) for r in gt])
    y = 100.0 * np.array([r["acc_mean"] for r in gt])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return {
        "archs": len(gt),
        "zero_layer": zero_layer + 1,  # 1-based, as the README counts layers
        **{name: float(c) for name, c in zip(NAMES, coef[1:], strict=True)},
        "residual_std": float(np.std(y - x @ coef)),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", nargs="+", type=Path, help="search_quality rows .jsonl files")
    p.add_argument("--zero-layer", type=int, default=2, help="the layer (1-based) to test")
    a = p.parse_args(argv)
    for path in a.rows:
        print(json.dumps({"file": str(path), **fit(read_rows(path), a.zero_layer - 1)}))


if __name__ == "__main__":
    main()
