"""Does the search optimise what it claims? Tiny space on CPU, task loss switched off
(objective=latency_only), so the outcome is known exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxyless.hardware import HardwareConfig, layer_costs
from proxyless.search import search
from proxyless.search_config import SearchConfig
from proxyless.space import get_space


def _cfg(run_dir: Path, target_frac: float | None, epochs: int = 12) -> SearchConfig:
    d: dict[str, Any] = {
        "data": {
            "name": "synthetic",
            "batch_size": 8,
            "synthetic_train_samples": 160,
            "synthetic_test_samples": 16,
        },
        "hardware": {"kind": "params", "target_frac": target_frac},
        "objective": {"kind": "latency_only"},
        "optim": {"arch_lr": 0.05},
        "schedule": {"warmup_epochs": 0, "epochs": epochs, "arch_every": 1, "steps_per_epoch": 10},
        "log": {"progress": False, "tensorboard": False, "heatmap": False},
        "threads": 1,
        "run_dir": str(run_dir),
    }
    return SearchConfig.from_dict(d)


def test_pure_latency_objective_derives_the_cost_minimal_arch(tmp_path: Path) -> None:
    costs = layer_costs(get_space("tiny"), HardwareConfig(kind="params"))
    result = search(_cfg(tmp_path, None, epochs=6))
    cheapest = [
        str(layer.candidates[i])
        for layer, i in zip(get_space("tiny").layers(), costs.min_indices())
    ]
    assert result.metrics["arch"] == cheapest
    assert result.metrics["derived_cost"] == pytest.approx(costs.min_cost())


def test_expected_cost_reaches_target_and_tighter_targets_derive_faster_archs(
    tmp_path: Path,
) -> None:
    results = [search(_cfg(tmp_path / f"t{f}", f)).metrics for f in (0.15, 0.45, 0.75)]
    for m in results:
        assert m["expected_cost"] == pytest.approx(m["target"], rel=0.05)
    expected = [m["expected_cost"] for m in results]
    derived = [m["derived_cost"] for m in results]
    assert expected == sorted(expected) and expected[0] < expected[-1]
    assert derived == sorted(derived) and derived[0] < derived[-1]
