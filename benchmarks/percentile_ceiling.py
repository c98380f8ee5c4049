"""How high a percentile can a search measure on a stored ground truth?

Reads rows files of `benchmarks/search_quality.py` (`rows.jsonl`, or the copies under
`benchmarks/results/`) and, for each searched arch, sets its percentile beside the
percentile that the best random arch within ±5 % of its latency would itself score if it
were trained again (`proxyless.ranking.percentile_ceiling`: a Gaussian re-measurement
with the ground truth's residual seed noise, and a model-free split-seed estimate). Runs
from before the summary carried these figures get them without training anything.

    PYTHONPATH=. python benchmarks/percentile_ceiling.py \
        benchmarks/results/search_quality_rows_*.jsonl

Prints one JSON line per file and target (plain search; `--variant LABEL` for a variant).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxyless.ranking import percentile_ceiling, residual_seed_std  # noqa: E402


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A rows file of `search_quality.py`, or one clear exit (shared by the scripts here)."""
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        msg = f"{path}: not a search_quality rows file ({e}); pass a rows.jsonl"
        raise SystemExit(msg) from None


def ceilings(rows: list[dict[str, Any]], variant: str | None) -> list[dict[str, Any]]:
    """Per target: the searches' mean percentile and the two ceiling estimates."""
    gt = [r for r in rows if r.get("row") == "ground_truth"]
    if not gt:
        return []
    seed_std = residual_seed_std([r["acc_seeds"] for r in gt])
    if seed_std is None:
        return []
    cloud = [(r["cost"], r["acc_seeds"]) for r in gt]
    searches = [
        r
        for r in rows
        if r.get("row") == "search"
        and r.get("variant") == variant
        and r.get("estimator") in ((None,) if variant else ("all_paths", None))
        and r.get("percentile") is not None
    ]
    out = []
    for t in sorted({r["target_frac"] for r in searches}):
        at = [r for r in searches if r["target_frac"] == t]
        c = [percentile_ceiling(r["cost"], cloud, seed_std) for r in at]
        retrained = [x["retrained_best"] for x in c if x["retrained_best"] is not None]
        split = [x["split_seed"] for x in c if x["split_seed"] is not None]
        out.append(
            {
                "target_frac": t,
                "searches": len(at),
                "percentile": float(np.mean([r["percentile"] for r in at])),
                "ceiling_retrained_best": float(np.mean(retrained)) if retrained else None,
                "ceiling_split_seed": float(np.mean(split)) if split else None,
                "peers": [x["n_peers"] + 1 if x["retrained_best"] is not None else 0 for x in c],
                "seed_std_residual": seed_std,
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", nargs="+", type=Path, help="search_quality rows .jsonl files")
    p.add_argument("--variant", default=None, help="a variant's label (default: plain search)")
    a = p.parse_args(argv)
    for path in a.rows:
        for line in ceilings(read_rows(path), a.variant):
            print(json.dumps({"file": path.name, **line}))


if __name__ == "__main__":
    main()
