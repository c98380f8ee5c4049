"""Search seeds pooled over several runs of `benchmarks/search_quality.py` against one ground truth.

Two search seeds per run are too few to separate a setting from another (a seed moves an arch's
percentile by 50 points), so runs add seeds (`--first-search-seed 2`, …). This reads their rows
files, checks that they share one ground truth (the same archs with the same accuracies; costs
may come from different tables, e.g. a run with `--ground-truth-from` on another machine), and
prints per setting — the plain search and each variant — and target: the searches pooled, their
mean percentile among random archs within ±5 % of their latency, mean accuracy, mean margin over
the random Pareto front at their own cost (each file's front, as stored in its rows), mean
margin over the median random arch within ±5 % (`vs_median`; the summary adds its standard
error over all searches of the setting) and τ at the end of the search. A target counts as
on the front when the mean margin is ≥ 0.

    PYTHONPATH=. python benchmarks/pool_search_seeds.py \
        benchmarks/results/search_quality_rows_gt5.jsonl \
        benchmarks/results/search_quality_rows_gt5_s23.jsonl

One JSON line per setting and target, then one summary line per setting.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from percentile_ceiling import read_rows  # the script's own folder is on sys.path


def _ground_truth(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, ...], tuple[float, ...]]]:
    return sorted(
        (tuple(r["arch"]), tuple(r["acc_seeds"])) for r in rows if r.get("row") == "ground_truth"
    )


def pooled(files: list[Path]) -> list[dict[str, Any]]:
    """Per (setting, target) rows and a summary row per setting, over every file's searches;
    one search (setting, target, seed) counted once even if several files carry it."""
    truth = None
    searches: dict[tuple, dict[str, Any]] = {}
    for path in files:
        rows = read_rows(path)
        gt = _ground_truth(rows)
        if not gt:
            raise SystemExit(f"{path}: no ground_truth rows; pass a search_quality rows.jsonl")
        if truth is None:
            truth = gt
        elif gt != truth:
            raise SystemExit(
                f"{path}: another ground truth than {files[0]} (archs or accuracies differ); "
                "pool only runs against one ground truth"
            )
        for r in rows:
            if r.get("row") != "search" or r.get("estimator") not in ("all_paths", None):
                continue
            setting = r.get("variant") or "default"
            searches.setdefault((setting, r["target_frac"], r["seed"]), r)
    by_target: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for (setting, t, _), r in sorted(searches.items()):
        by_target[(setting, t)].append(r)
    out: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for (setting, t), rs in by_target.items():
        pct = [r["percentile"] for r in rs if r.get("percentile") is not None]
        margin = float(np.mean([r["acc_mean"] - r["front"] for r in rs]))
        taus = [r["tau_end"] for r in rs if r.get("tau_end") is not None]
        vs_median = [r["vs_median"] for r in rs if r.get("vs_median") is not None]
        row = {
            "setting": setting,
            "target_frac": t,
            "seeds": sorted(r["seed"] for r in rs),
            "percentile": float(np.mean(pct)) if pct else None,
            "acc_mean": float(np.mean([r["acc_mean"] for r in rs])),
            "front_margin": margin,
            "vs_median": float(np.mean(vs_median)) if vs_median else None,
            "on_front": margin >= 0,
            "tau_end": float(np.mean(taus)) if taus else None,
        }
        out.append(row)
        s = summary.setdefault(
            setting, {"percentiles": [], "on_front": 0, "taus": [], "accs": [], "vs_median": []}
        )
        s["percentiles"].append(row["percentile"])
        s["vs_median"] += vs_median
        s["on_front"] += row["on_front"]
        s["taus"] += taus
        s["accs"] += [r["acc_mean"] for r in rs]
    for setting, s in summary.items():
        known = [p for p in s["percentiles"] if p is not None]
        out.append(
            {
                "setting": setting,
                "summary": True,
                "searched_percentile": s["percentiles"],
                "searched_percentile_mean": float(np.mean(known)) if known else None,
                "on_pareto_front": s["on_front"],
                "ranking_tau_end": float(np.mean(s["taus"])) if s["taus"] else None,
                "acc_mean": float(np.mean(s["accs"])),
                **_mean_and_error("vs_median", s["vs_median"]),
            }
        )
    return out


def _mean_and_error(name: str, values: list[float]) -> dict[str, Any]:
    """Mean, standard error and count of `values` (the searches' margins over the median
    random arch of their latency): is the search better than a random arch at all, and by
    more than the searches' own scatter?"""
    n = len(values)
    return {
        f"{name}_mean": float(np.mean(values)) if n else None,
        f"{name}_se": float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else None,
        f"{name}_n": n,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", nargs="+", type=Path, help="search_quality rows .jsonl files")
    for row in pooled(p.parse_args(argv).rows):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
