"""Small search configs for tests: a base dict with per-test overrides merged one level deep."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from proxyless.search_config import SearchConfig


def merged_config(base: dict[str, Any], run_dir: Path, **over: Any) -> SearchConfig:
    d = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        else:
            d[key] = value
    d["run_dir"] = str(run_dir)
    return SearchConfig.from_dict(d)
