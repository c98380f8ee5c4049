"""Does the supernet learn the task at all in warmup? Train accuracy per epoch of the same
supernet and weight step under different path-sampling rules, side by side.

Why: on `data=clutter` the search's supernet stayed at chance for 12 epochs while single
archs learned (benchmarks/search_quality.py: inherited accuracies 9-15 %). This isolates the
sampling rule from everything else.

    PYTHONPATH=. python benchmarks/supernet_learning.py --epochs 3 --train-subset 6000
    # modes: uniform (the search's warmup), fixed (one path: a plain network),
    #        largest_first (largest path for the first epoch, then uniform),
    #        sandwich (largest path and a uniform path on alternate steps),
    #        deep (a full-depth path of drawn non-Zero ops and a uniform path on alternate
    #        steps), cycle (alternate steps: one op in every layer, cycling through the ops)
    # --weight-sharing separate | kernels | nested: how the supernet's candidates hold their
    #        weights (proxyless/nested.py)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from proxyless.data import DataConfig, build_datasets, build_loaders
from proxyless.mixed_op import WEIGHT_SHARING
from proxyless.space import get_space
from proxyless.steps import weight_step
from proxyless.supernet import SuperNet

MODES = ("uniform", "fixed", "largest_first", "sandwich", "deep", "cycle")


def run(mode: str, a: argparse.Namespace) -> list[float]:
    cfg = DataConfig(
        name=a.data, batch_size=64, heldout_per_class=0, seed=0, train_subset=a.train_subset
    )
    loader = build_loaders(build_datasets(cfg), cfg).train
    torch.manual_seed(0)
    net = SuperNet(get_space(a.space), weight_sharing=a.weight_sharing)
    opt = torch.optim.SGD(
        net.weight_parameters(), lr=a.lr, momentum=0.9, nesterov=True, weight_decay=4e-5
    )
    gen = torch.Generator().manual_seed(0)
    big, first = net.largest_path(), [0] * len(net.layers)
    non_zero = [
        [i for i in range(layer.num_candidates) if not layer.is_zero(i)] for layer in net.layers
    ]
    total, step, accs = a.epochs * len(loader), 0, []
    for epoch in range(a.epochs):
        correct = seen = 0
        for x, y in loader:
            for group in opt.param_groups:  # linear warmup over 15 % of the steps
                group["lr"] = a.lr * min(1.0, (step + 1) / (0.15 * total))
            fixed = {
                "fixed": first,
                "largest_first": big if epoch == 0 else None,
                "sandwich": big if step % 2 == 0 else None,
            }.get(mode)
            if mode == "deep" and step % 2 == 0:
                fixed = [ops[int(torch.randint(len(ops), (1,), generator=gen))] for ops in non_zero]
            if mode == "cycle" and step % 2 == 0:
                fixed = [ops[(step // 2) % len(ops)] for ops in non_zero]
            if fixed is not None:
                net.set_paths(fixed)
            _, logits = weight_step(
                net, x, y, opt, gen, uniform=True, label_smoothing=0.1, resample=fixed is None
            )
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            step += 1
        accs.append(correct / seen)
    return accs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="tiny")
    p.add_argument("--data", default="clutter")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-subset", type=int, default=6000)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weight-sharing", default="separate", choices=WEIGHT_SHARING)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    for mode in a.modes:
        t0 = time.time()
        accs = run(mode, a)
        row = {
            "mode": mode,
            "weight_sharing": a.weight_sharing,
            "train_acc_per_epoch": accs,
            "seconds": time.time() - t0,
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
