"""Is the interleaved protocol more repeatable than naive timing on this (noisy) machine?

Measures the same conv ops twice with each method, side by side in one run, and prints
the disagreement between the two repeats (MAPE %, Spearman) and the ratio naive/protocol.
    PYTHONPATH=. python benchmarks/latency_protocol.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from latency.backends import get_backend
from latency.metrics import metrics
from latency.protocol import Protocol, measure


def items() -> dict:
    out = {}
    for c in (8, 16, 32, 64):
        for k in (1, 3, 5):

            def build(c=c, k=k):
                return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2), nn.ReLU()), torch.randn(
                    1, c, 28, 28
                )

            out[f"conv_i{c}x28x28_o{c}_k{k}_e1_s1_r0"] = build
    return out


def naive(builders: dict, backend, calls: int = 50) -> dict[str, float]:
    """One block per item, one after another: warmup, then the median of `calls` timings."""
    out = {}
    for key, build in builders.items():
        run = backend.prepare(*build())
        for _ in range(5):
            run()
        out[key] = float(np.median(backend.time_calls(run, calls)))
    return out


def main(repeats: int = 3) -> None:
    """Each method measures all items twice, `repeats` times; median disagreement reported."""
    backend, builders = get_backend("torch-cpu", threads=1), items()
    keys, proto = list(builders), Protocol()

    def protocol() -> dict[str, float]:
        got = measure(builders, backend, proto, progress=False)
        return {k: e.ms for k, e in got.entries.items()}

    mape: dict[str, list[float]] = {"naive": [], "protocol": []}
    secs = dict.fromkeys(mape, 0.0)
    for _ in range(repeats):  # alternate methods so both see the same machine moods
        for name, fn in (("naive", lambda: naive(builders, backend)), ("protocol", protocol)):
            t0 = time.perf_counter()
            a, b = fn(), fn()
            secs[name] += time.perf_counter() - t0
            mape[name].append(metrics([a[k] for k in keys], [b[k] for k in keys])["mape"])
    for name, v in mape.items():
        print(
            f"{name:9s} repeat-vs-repeat MAPE % {[round(x, 2) for x in v]}  "
            f"median {np.median(v):.2f}  time {secs[name]:.1f}s"
        )
    ratio = np.median(mape["naive"]) / np.median(mape["protocol"])
    print(f"ratio naive/protocol (median repeat MAPE): {ratio:.2f}")


if __name__ == "__main__":
    main()
