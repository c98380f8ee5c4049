"""The search-quality benchmark end to end at toy size (slow: trains and searches for real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_emits_rows_summary_and_plot(tmp_path: Path) -> None:
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "search_quality.py"),
        "--k", "4", "--seeds", "2", "--epochs", "1", "--train-subset", "300",
        "--warmup-epochs", "1", "--search-epochs", "1", "--targets", "0.5",
        "--estimators", "all_paths", "--random-candidates", "2", "--calib-archs", "8",
        "--workers", "1", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
        "--set", "data.clutter_train_samples=600", "data.clutter_test_samples=100",
        "++data.heldout_per_class=10",
    ]  # fmt: skip
    env_extra = {"PROXYLESS_CACHE": str(tmp_path / "data")}
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env_extra}, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [r["row"] for r in rows]
    assert kinds.count("ground_truth") == 4 and kinds[-1] == "summary"
    assert {"search", "random_search", "seed_noise"} <= set(kinds)
    summary = rows[-1]
    for key in (
        "spread_over_seed_noise",
        "ranking_tau_warmup",
        "ranking_tau_end",
        "searched_percentile",
        "searched_percentile_mean",
        "on_pareto_front",
        "latency_error_max",
    ):
        assert key in summary, key
    assert len(summary["searched_percentile"]) == 1
    assert -1.0 <= summary["ranking_tau_end"] <= 1.0
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000
    # A second run reuses every trained arch and search: nothing is trained again.
    again = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env_extra}, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        json.loads(again.stdout.splitlines()[-1])["ranking_tau_end"] == summary["ranking_tau_end"]
    )
