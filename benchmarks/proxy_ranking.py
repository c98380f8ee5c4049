"""How well does each zero-cost proxy rank the search-quality benchmark's ground-truth archs?

Every proxy in `proxyless.zeroshot.PROXIES` scores each ground-truth arch (fresh random
weights, `--inits` initialisations averaged) on real training batches of the benchmark's
data group and on random inputs; Kendall τ / Spearman ρ against the archs' mean test
accuracy trained from scratch. The latency table's cost is ranked alongside, as the
simplest baseline of all (bigger = better).

    PYTHONPATH=. python benchmarks/proxy_ranking.py                       # stored ground truth
    PYTHONPATH=. python benchmarks/proxy_ranking.py --rows bench_quality/rows.jsonl

Output: one JSON line per (proxy, inputs) and a last summary line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from proxyless.arch import Arch
from proxyless.data import DataConfig, build_datasets, build_loaders
from proxyless.ranking import kendall_tau, spearman_rho
from proxyless.space import get_space
from proxyless.zeroshot import PROXIES

ROOT = Path(__file__).resolve().parents[1]


def ground_truth(rows: Path) -> list[dict]:
    gt = [r for r in map(json.loads, rows.read_text().splitlines()) if r["row"] == "ground_truth"]
    if not gt:
        raise SystemExit(f"{rows} has no ground_truth rows: run benchmarks/search_quality.py first")
    return gt


def batches(data: str, n: int, size: int, random_inputs: bool, seed: int) -> list:
    torch.manual_seed(seed)  # augmentation draws from the global generator
    cfg = DataConfig(name=data, batch_size=size, heldout_per_class=0, seed=seed)
    splits = build_datasets(cfg)
    loader = build_loaders(splits, cfg).train
    real = [b for _, b in zip(range(n), loader, strict=False)]
    if not random_inputs:
        return real
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(x.shape, generator=gen), y) for x, y in real]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default=str(ROOT / "benchmarks/results/search_quality_rows.jsonl"))
    p.add_argument("--space", default="tiny")
    p.add_argument("--data", default="clutter")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--inits", type=int, default=3, help="random initialisations per arch")
    p.add_argument("--proxies", nargs="+", default=sorted(PROXIES.names()))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    gt = ground_truth(Path(a.rows))
    acc = [r["acc_mean"] for r in gt]
    space = get_space(a.space)
    archs = [Arch.from_strings(space, r["arch"]) for r in gt]
    cost = [r["cost"] for r in gt]
    results = {"cost (latency table)": (kendall_tau(cost, acc), spearman_rho(cost, acc))}
    print(json.dumps({"proxy": "cost", "tau": results["cost (latency table)"][0]}), flush=True)
    for inputs in ("real", "random"):
        data = batches(a.data, a.batches, a.batch_size, inputs == "random", seed=0)
        for name in a.proxies:
            t0 = time.perf_counter()
            scores = []
            for arch in archs:
                per_init = []
                for init in range(a.inits):
                    torch.manual_seed(init)
                    per_init.append(PROXIES.get(name)(arch.build(), data))
                scores.append(float(np.mean(per_init)))
            tau, rho = kendall_tau(scores, acc), spearman_rho(scores, acc)
            results[f"{name} ({inputs})"] = (tau, rho)
            row = {"proxy": name, "inputs": inputs, "tau": tau, "rho": rho,
                   "seconds_per_arch": (time.perf_counter() - t0) / len(archs)}  # fmt: skip
            print(json.dumps(row), flush=True)
    summary = {"row": "summary", "k": len(gt), "rows": a.rows, "batches": a.batches,
               "batch_size": a.batch_size, "inits": a.inits,
               "tau_rho": {k: [round(v, 3) for v in tr] for k, tr in results.items()}}  # fmt: skip
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
