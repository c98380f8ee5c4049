"""Arch-step time of a supernet pruned to k candidates per layer (`prune.keep=k`) against the
unpruned one (7 candidates in residual layers, 6 elsewhere), all_paths estimator, on CPU.

Both supernets hold the same weights; the pruned one keeps, per layer, the k candidates
with the most weights (the worst case for time: the cheap ones are pruned). Rounds
alternate the two (A B A B …) on the same batch, so machine-speed drift cancels; the ratio
is the median of per-round ratios.

    PYTHONPATH=. python benchmarks/prune_arch_step.py [--space cifar --batch 32 --keep 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from proxyless.estimators import ESTIMATORS
from proxyless.space import get_space
from proxyless.steps import arch_step
from proxyless.supernet import SuperNet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="cifar")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--keep", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    space = get_space(a.space)
    full = SuperNet(space).train()
    pruned = copy.deepcopy(full)
    for layer in pruned.layers:
        sizes = [(-1 if layer.is_zero(j) else op.kernel**2 * op.expand, j)
                 for j, op in enumerate(layer.spec.candidates)]  # fmt: skip
        layer.restrict(sorted(j for _, j in sorted(sizes, reverse=True)[: a.keep]))
    x = torch.randn(a.batch, 3, space.input_size, space.input_size)
    y = torch.randint(0, space.num_classes, (a.batch,))
    nets = {"all": full, f"keep{a.keep}": pruned}
    times: dict[str, list[float]] = {k: [] for k in nets}
    for r in range(a.rounds + 1):  # round 0: warmup
        for name, net in nets.items():
            opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3)
            gen = torch.Generator().manual_seed(r)
            t = time.perf_counter()
            arch_step(net, ESTIMATORS.build("all_paths"), x, y, opt, gen)
            if r:
                times[name].append(time.perf_counter() - t)
    ratios = [p / f for p, f in zip(times[f"keep{a.keep}"], times["all"], strict=True)]
    print(json.dumps({
        "space": a.space, "batch": a.batch, "keep": a.keep, "threads": a.threads,
        "rounds": a.rounds, "median_all_s": statistics.median(times["all"]),
        "median_pruned_s": statistics.median(times[f"keep{a.keep}"]),
        "ratio_pruned_over_all": statistics.median(ratios),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
