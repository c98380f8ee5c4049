"""Cost of the supernet against the standalone network of the same path, on CPU.

For the ImageNet space (batch 8, 224×224) and the CIFAR space (batch 64, 32×32) it measures
step time and peak tensor memory of

  standalone     the derived network of one fixed sampled path: fwd + bwd + SGD step
  weight         the supernet weight step on that same path
  all_paths      arch step, memory-light exact estimator (the default)
  all_paths_sub  arch step, all_paths with batch_fraction=0.25 (extra row)
  two_path       arch step, two-path estimator (fixed pair that contains the path)
  darts          arch step, full softmax mixture (memory baseline; timed in its child only)

Time: all timed configurations run interleaved in ONE process (A B C … per round, same path,
same batch); every ratio is the median of per-round ratios, so machine-speed drift cancels.
Memory: each (space, configuration) runs in a FRESH child process (`--child`): one warmup
step, then one step under `torch.profiler.profile(profile_memory=True)`; the peak is the
maximum of the CPU allocator's running "Total Allocated" over the step's allocation events
minus its value at the start (gradients of the warmup are dropped before, so the step's
baseline is weights + optimizer state + batch). Also printed: the arch-gradient error of
batch_fraction=0.25 against the exact all_paths gradient on one fixed batch and path.

    python benchmarks/supernet_cost.py            # full run, ~10 min on 2 cores
    python benchmarks/supernet_cost.py --quick    # < 3 min: fewer rounds/draws

One JSON object per row; the LAST line is the summary of ratios per input size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from proxyless.arch import Arch
from proxyless.estimators import ESTIMATORS
from proxyless.space import get_space
from proxyless.steps import arch_step, weight_step
from proxyless.supernet import SuperNet

BATCH = {"imagenet": 8, "cifar": 64}
TIMED = ["standalone", "weight", "all_paths", "all_paths_sub", "two_path"]
CONFIGS = [*TIMED, "darts"]
SUB_FRACTION = 0.25
SEED = 0


# --- setup -------------------------------------------------------------------------------
class Bench:
    """One supernet, its standalone path network, a fixed batch and a step per configuration."""

    def __init__(self, space_name: str, seed: int = SEED) -> None:
        torch.manual_seed(seed)
        self.space = get_space(space_name)
        self.net = SuperNet(self.space).train()
        gen = torch.Generator().manual_seed(seed)
        self.path = self.net.sample_paths(gen)
        ops = [
            layer.spec.candidates[i] for layer, i in zip(self.net.layers, self.path, strict=True)
        ]
        self.standalone = self.net.extract(Arch(self.space, ops)).train()
        b, s = BATCH[space_name], self.space.input_size
        self.x = torch.randn(b, 3, s, s, generator=gen)
        self.y = torch.randint(0, self.space.num_classes, (b,), generator=gen)
        sgd = {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 4e-5}
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), **sgd)
        self.s_opt = torch.optim.SGD(self.standalone.parameters(), **sgd)
        self.a_opt = torch.optim.Adam(
            self.net.arch_parameters(), lr=1e-3, betas=(0.0, 0.999), eps=1e-8
        )
        # two_path needs a fixed pair per layer that contains the fixed path.
        self.pairs = []
        for layer, i in zip(self.net.layers, self.path, strict=True):
            others = [j for j in range(layer.num_candidates) if j != i]
            j = others[int(torch.randint(len(others), (1,), generator=gen))]
            self.pairs.append([i, j] if torch.rand((), generator=gen) < 0.5 else [j, i])
        self.est = {
            "all_paths": ESTIMATORS.build("all_paths"),
            "all_paths_sub": ESTIMATORS.build(
                "all_paths",
                batch_fraction=SUB_FRACTION,
                generator=torch.Generator().manual_seed(seed + 1),
            ),
            "two_path": ESTIMATORS.build("two_path"),
            "darts": ESTIMATORS.build("darts"),
        }

    def step(self, config: str) -> Callable[[], None]:
        net, x, y = self.net, self.x, self.y
        if config == "standalone":

            def run() -> None:
                self.s_opt.zero_grad(set_to_none=True)
                F.cross_entropy(self.standalone(x), y).backward()
                self.s_opt.step()

            return run
        if config == "weight":

            def run_weight() -> None:
                net.set_paths(self.path)
                weight_step(net, x, y, self.w_opt, resample=False)

            return run_weight

        est = self.est[config]

        def run_arch() -> None:
            net.set_paths(self.path)  # same path in every step (darts ignores it)
            if config == "two_path":  # what TwoPath.sample records, for a fixed pair
                for layer, pair in zip(net.layers, self.pairs, strict=True):
                    est.set_pair(layer, pair)  # type: ignore[attr-defined]
            arch_step(net, est, x, y, self.a_opt, resample=False)

        return run_arch

    def drop_grads(self) -> None:
        self.s_opt.zero_grad(set_to_none=True)
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)


# --- memory ------------------------------------------------------------------------------
def peak_allocated(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak − start, net change) of the CPU allocator's Total Allocated during `fn()`."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    allocs = []
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        if e.tag == _EventType.Allocation and str(e.extra_fields.device) == "cpu":
            allocs.append(
                (e.start_time_ns, e.extra_fields.alloc_size, e.extra_fields.total_allocated)
            )
    if not allocs:
        return 0, 0
    allocs.sort(key=lambda a: a[0])
    start = allocs[0][2] - allocs[0][1]
    return max(a[2] for a in allocs) - start, allocs[-1][2] - start


def child(space_name: str, config: str) -> dict[str, Any]:
    bench = Bench(space_name)
    run = bench.step(config)
    run()  # warmup: optimizer state exists, lazy init done
    bench.drop_grads()
    t0 = time.perf_counter()
    peak, net_change = peak_allocated(run)
    t_prof = time.perf_counter() - t0
    return {
        "space": space_name,
        "config": config,
        "peak_mem_mb": round(peak / 2**20, 2),
        "net_alloc_change_mb": round(net_change / 2**20, 2),
        "profiled_step_ms": round(1e3 * t_prof, 1),
    }


def measure_memory(space_names: list[str], jobs: int = 2) -> dict[str, dict[str, Any]]:
    """One fresh child per (space, config). Peak bytes do not depend on speed, so children run
    `jobs` at a time, all before the timing loop (which they would otherwise disturb)."""
    todo = [(s, c) for s in space_names for c in CONFIGS]
    procs: dict[tuple[str, str], subprocess.Popen[str]] = {}
    rows: dict[str, dict[str, Any]] = {s: {} for s in space_names}
    while todo or procs:
        while todo and len(procs) < jobs:
            s, c = todo.pop(0)
            procs[(s, c)] = subprocess.Popen(
                [sys.executable, __file__, "--child", s, c],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        key = next(iter(procs))
        out, _ = procs.pop(key).communicate()
        rows[key[0]][key[1]] = json.loads(out.strip().splitlines()[-1])
    return rows


# --- time --------------------------------------------------------------------------------
def measure_time(bench: Bench, rounds: int, warmup: int) -> dict[str, list[float]]:
    steps = {c: bench.step(c) for c in TIMED}
    times: dict[str, list[float]] = {c: [] for c in TIMED}
    for r in range(warmup + rounds):
        for c in TIMED:
            t0 = time.perf_counter()
            steps[c]()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[c].append(dt)
    return times


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


# --- gradient error of the batch subsample -----------------------------------------------
def arch_grad(bench: Bench, est: Any) -> torch.Tensor:
    net = bench.net
    net.set_paths(bench.path)
    for a in net.arch_parameters():
        a.grad = None
    with net.frozen_weights():
        F.cross_entropy(net(bench.x, est), bench.y).backward()
    return torch.cat([a.grad.detach().clone() for a in net.arch_parameters()])  # type: ignore[union-attr]


def subsample_error(bench: Bench, draws: int) -> dict[str, Any]:
    exact = arch_grad(bench, ESTIMATORS.build("all_paths"))
    est = ESTIMATORS.build(
        "all_paths", batch_fraction=SUB_FRACTION, generator=torch.Generator().manual_seed(123)
    )
    g = torch.stack([arch_grad(bench, est) for _ in range(draws)])
    mean = g.mean(0)
    norm = exact.norm()
    return {
        "batch_fraction": SUB_FRACTION,
        "draws": draws,
        "rel_bias_of_mean": round(float((mean - exact).norm() / norm), 4),
        "rel_std_one_draw": round(float((g - mean).norm(dim=1).pow(2).mean().sqrt() / norm), 4),
        "rel_err_one_draw": round(float((g - exact).norm(dim=1).mean() / norm), 4),
        # the bias estimate itself carries sampling noise of about std / sqrt(draws)
        "bias_noise_floor": round(
            float((g - mean).norm(dim=1).pow(2).mean().sqrt() / norm) / draws**0.5, 4
        ),
        "cosine_mean_vs_exact": round(float(F.cosine_similarity(mean, exact, dim=0)), 4),
    }


def mem_ratio(mem: dict[str, dict[str, Any]], a: str, b: str = "weight") -> float:
    return round(mem[a]["peak_mem_mb"] / mem[b]["peak_mem_mb"], 3)


# --- main --------------------------------------------------------------------------------
def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and draws (< 3 min)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--spaces", nargs="+", default=["imagenet", "cifar"])
    ap.add_argument("--child", nargs=2, metavar=("SPACE", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        emit(child(*args.child))
        return

    rounds = args.rounds or (3 if args.quick else 12)
    warmup = 1 if args.quick else 2
    draws = 2 if args.quick else 20
    t_start = time.perf_counter()
    emit(
        {
            "setup": {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "batch": BATCH,
                "timing": f"{rounds} interleaved rounds after {warmup} warmup, "
                "ratios = median of per-round ratios",
                "memory": "fresh process per (space, config), profiler allocator peak",
                "quick": args.quick,
                "reduced": "rounds 12->3, warmup 2->1, subsample draws 20->2 (batch sizes kept)"
                if args.quick
                else None,
            }
        }
    )
    summary: dict[str, Any] = {}
    mem_all = measure_memory(args.spaces)
    for space_name in args.spaces:
        mem = mem_all[space_name]
        bench = Bench(space_name)
        times = measure_time(bench, rounds, warmup)
        for c in CONFIGS:
            row = {"space": space_name, "batch": BATCH[space_name], **mem[c]}
            if c in times:
                row["time_ms_median"] = round(1e3 * statistics.median(times[c]), 1)
                row["time_vs_weight"] = round(paired_ratio(times, c, "weight"), 3)
            row["mem_vs_weight"] = round(mem[c]["peak_mem_mb"] / mem["weight"]["peak_mem_mb"], 3)
            emit(row)
        err = subsample_error(bench, draws)
        emit({"space": space_name, "row": "all_paths_sub_grad_error", **err})

        summary[space_name] = {
            "weight_vs_standalone_mem": mem_ratio(mem, "weight", "standalone"),
            "weight_vs_standalone_time": round(paired_ratio(times, "weight", "standalone"), 3),
            "all_paths_vs_weight_time": round(paired_ratio(times, "all_paths", "weight"), 3),
            "all_paths_vs_weight_mem": mem_ratio(mem, "all_paths"),
            "two_path_vs_weight_time": round(paired_ratio(times, "two_path", "weight"), 3),
            "two_path_vs_weight_mem": mem_ratio(mem, "two_path"),
            "darts_vs_weight_mem": mem_ratio(mem, "darts"),
            "all_paths_sub_vs_weight_time": round(
                paired_ratio(times, "all_paths_sub", "weight"), 3
            ),
            "all_paths_sub_vs_weight_mem": mem_ratio(mem, "all_paths_sub"),
            "all_paths_sub_rel_bias": err["rel_bias_of_mean"],
            "all_paths_sub_rel_std": err["rel_std_one_draw"],
        }
    summary["meta"] = {
        "rounds": rounds,
        "quick": args.quick,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    emit(summary)


if __name__ == "__main__":
    main()
