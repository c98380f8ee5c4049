"""How much does a training seed move an arch's accuracy, under which training recipe?

`search_quality.py` judges searches against a ground truth of archs trained from scratch; its
spread target asks that archs differ by ≥ 3× what a seed moves them. This trains a few fixed
archs with several seeds under each learning rate given (the benchmark's budget otherwise)
and prints, per learning rate, the pooled seed std and the mean accuracy, so that a recipe
can be chosen for the ground truth by its noise, not guessed. Trainings are cached like the
benchmark's (same key), so a rerun with more seeds or rates trains only what is new.

    PYTHONPATH=. python benchmarks/seed_noise.py --seeds 5 --lr 0.1 0.05 0.025
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import search_quality as sq  # noqa: E402

# the full benchmark's seed-noise arch (large) and a small 3-layer one of the tiny space
ARCHS = (
    ("mb_k5_e6", "zero", "mb_k5_e3", "mb_k5_e6", "mb_k5_e6", "mb_k7_e6"),
    ("mb_k3_e3", "zero", "mb_k5_e6", "zero", "mb_k3_e6", "zero"),
)


def arch_dict(space_name: str, ops: tuple[str, ...]) -> dict[str, Any]:
    from proxyless.arch import Arch
    from proxyless.space import get_space

    return Arch.from_strings(get_space(space_name), ops).to_dict()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--lr", type=float, nargs="+", default=[0.1])
    p.add_argument("--epochs", type=int, default=None, help="default: the benchmark's")
    p.add_argument("--train-subset", type=int, default=None, help="cap on training images")
    p.add_argument("--set", nargs="*", default=[], help="extra Hydra overrides (data.*=…)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cache", default="gt_cache", help="trainings, as search_quality.py's")
    a = p.parse_args(argv)
    base = sq.Settings()
    if a.epochs is not None:
        base.budget.epochs = a.epochs
    base.budget.train_subset = a.train_subset
    base.overrides = tuple(a.set)
    jobs = {}
    with ProcessPoolExecutor(a.workers, initializer=sq._init_worker, initargs=(1,)) as pool:
        for lr in a.lr:
            s = replace(base, budget=replace(base.budget, lr=lr))
            for ops in ARCHS:
                d = arch_dict(s.space, ops)
                for seed in range(a.seeds):
                    key = (lr, ops, seed)
                    jobs[key] = pool.submit(sq.train_job, d, seed, s, a.cache)
        acc = {k: f.result()["acc"] for k, f in jobs.items()}
    for lr in a.lr:
        per_arch = [[acc[(lr, ops, sd)] for sd in range(a.seeds)] for ops in ARCHS]
        pooled = statistics.mean(statistics.variance(v) for v in per_arch) ** 0.5
        row = {
            "lr": lr,
            "epochs": base.budget.epochs,
            "train_subset": a.train_subset,
            "set": a.set,
            "seeds": a.seeds,
            "accs": per_arch,
            "pooled_seed_std": round(pooled, 4),
            "mean_acc": round(statistics.mean(x for v in per_arch for x in v), 4),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
