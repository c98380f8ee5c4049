"""How well does a brief training from scratch (the `derive.judge=train` judge) rank the
search-quality benchmark's ground-truth archs?

Each ground-truth arch of a rows file is trained from scratch for each of `--epochs` on the
search's training split (held-out images removed) and scored on the held-out split, exactly
as `derive.judge=train` scores a search's finalists (`proxyless.brief_training`, the search
defaults' optimizer at `--lr`); Kendall τ / Spearman ρ against the archs' mean test accuracy
after the benchmark's full training, and — what the judge is for — the share of pairs of
near-equal cost (within `--window`) that it orders as the ground truth does.

    PYTHONPATH=. python benchmarks/brief_training_ranking.py \\
        --rows benchmarks/results/search_quality_rows_gt5.jsonl --epochs 2 4 8

Output: one JSON line per (arch, epochs, seed) training (cached in `--cache`, so a rerun
with more epochs or seeds trains only what is new), one per epochs count, a summary last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.percentile_ceiling import read_rows  # noqa: E402


def brief_job(ops: list[str], space: str, data: str, epochs: int, seed: int, lr: float) -> float:
    """One arch trained briefly, in a worker: its held-out top-1 (fraction)."""
    import torch

    from benchmarks.search_quality import SearchBudget
    from proxyless.arch import Arch
    from proxyless.brief_training import brief_optim, brief_training_accuracy
    from proxyless.data import DataConfig, build_datasets, build_loaders
    from proxyless.distributed import DistContext
    from proxyless.search_config import SearchOptimConfig
    from proxyless.space import get_space

    torch.set_num_threads(1)
    sp = get_space(space)
    by_name = [{str(c): c for c in layer.candidates} for layer in sp.layers()]
    arch = Arch(sp, [names[op] for names, op in zip(by_name, ops, strict=True)])
    cfg = DataConfig(name=data, image_size=sp.input_size, seed=seed)
    loaders = build_loaders(build_datasets(cfg), cfg, distributed=False)
    # the benchmark's searches: the search optimizer's defaults, its lr warmup
    optim = SearchOptimConfig(lr_warmup_epochs=SearchBudget().lr_warmup_epochs)
    return brief_training_accuracy(
        arch,
        loaders.train,
        loaders.heldout,
        DistContext(),
        epochs,
        brief_optim(optim, lr),
        seed,
        optim.label_smoothing,
    )


def pair_agreement(
    costs: list[float], truth: list[float], judged: list[float], window: float
) -> tuple[float | None, int]:
    """Share of pairs within `window` relative cost of each other that `judged` orders as
    `truth` does (ties in `judged` count half), and the number of such pairs."""
    hits, n = 0.0, 0
    for i, j in itertools.combinations(range(len(costs)), 2):
        if abs(costs[i] - costs[j]) > window * max(costs[i], costs[j]) or truth[i] == truth[j]:
            continue
        n += 1
        d = (judged[i] - judged[j]) * (truth[i] - truth[j])
        hits += 1.0 if d > 0 else 0.5 if d == 0 else 0.0
    return (hits / n if n else None), n


def main(argv: list[str] | None = None) -> None:
    from proxyless.ranking import kendall_tau, spearman_rho

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=Path, required=True, help="a search_quality rows.jsonl")
    p.add_argument("--epochs", type=int, nargs="+", default=[4])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--window", type=float, default=0.1, help="relative cost of a 'near' pair")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--cache", type=Path, default=Path("bench_brief/cache.jsonl"))
    a = p.parse_args(argv)
    rows = read_rows(a.rows)
    gt = [r for r in rows if r.get("row") == "ground_truth"]
    summary_in = next((r for r in rows if r.get("row") == "summary"), {})
    if not gt:
        raise SystemExit(f"{a.rows} has no ground_truth rows: run benchmarks/search_quality.py")
    space, data = summary_in.get("space", "tiny"), summary_in.get("data", "clutter")

    def key(ops: list[str], epochs: int, seed: int) -> str:
        """A training's cache key: everything that determines its result."""
        return json.dumps([ops, space, data, epochs, seed, a.lr])

    done: dict[str, float] = {}
    if a.cache.is_file():
        for line in a.cache.read_text().splitlines():
            r = json.loads(line)
            done[r["key"]] = r["acc"]
    jobs = [
        (r["arch"], e, s)
        for e in a.epochs
        for s in range(a.seeds)
        for r in gt
        if key(r["arch"], e, s) not in done
    ]
    a.cache.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with ProcessPoolExecutor(a.workers) as pool, a.cache.open("a") as cache:
        futures = [
            (job, pool.submit(brief_job, job[0], space, data, *job[1:], a.lr)) for job in jobs
        ]
        for k, ((ops, e, s), fut) in enumerate(futures, 1):
            acc = done[key(ops, e, s)] = fut.result()
            cache.write(json.dumps({"key": key(ops, e, s), "acc": acc}) + "\n")
            cache.flush()
            row = {"row": "training", "arch": ops, "epochs": e, "seed": s, "acc": acc}
            print(json.dumps(row), flush=True)
            print(f"[{k}/{len(jobs)}] {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    costs = [r["cost"] for r in gt]
    truth = [r["acc_mean"] for r in gt]
    per_epochs = []
    for e in a.epochs:
        judged = [float(np.mean([done[key(r["arch"], e, s)] for s in range(a.seeds)])) for r in gt]
        agree, n = pair_agreement(costs, truth, judged, a.window)
        row = {
            "row": "epochs",
            "epochs": e,
            "seeds": a.seeds,
            "tau": kendall_tau(judged, truth),
            "rho": spearman_rho(judged, truth),
            "near_pairs": n,
            "near_pair_agreement": agree,
            "acc_range": [min(judged), max(judged)],
        }
        per_epochs.append(row)
        print(json.dumps(row), flush=True)
    cost_agree, n = pair_agreement(costs, truth, costs, a.window)
    print(
        json.dumps(
            {
                "row": "summary",
                "rows": str(a.rows),
                "k": len(gt),
                "window": a.window,
                "cost_tau": kendall_tau(costs, truth),  # bigger = better, the baseline
                "cost_near_pair_agreement": cost_agree,
                "supernet_tau_end": summary_in.get("ranking_tau_end"),
                "tau_by_epochs": {r["epochs"]: r["tau"] for r in per_epochs},
                "near_pair_agreement_by_epochs": {
                    r["epochs"]: r["near_pair_agreement"] for r in per_epochs
                },
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
