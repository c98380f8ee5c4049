"""Small search configs for tests: a base dict with per-test overrides merged one level deep."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from proxyless.search_config import SearchConfig

# A search of a few steps on synthetic data with a params budget: seconds on one thread.
FAST_SEARCH: dict[str, Any] = {
    "data": {
        "name": "synthetic",
        "batch_size": 16,
        "synthetic_train_samples": 160,
        "synthetic_test_samples": 32,
    },
    "hardware": {"kind": "params", "target_frac": 0.3},
    "schedule": {"warmup_epochs": 1, "epochs": 2, "arch_every": 2, "steps_per_epoch": 4},
    "log": {"progress": False, "every_steps": 1},
    "threads": 1,
}


def merged(base: dict[str, Any], **over: Any) -> dict[str, Any]:
    d = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        else:
            d[key] = value
    return d


def merged_config(base: dict[str, Any], run_dir: Path, **over: Any) -> SearchConfig:
    return SearchConfig.from_dict({**merged(base, **over), "run_dir": str(run_dir)})
