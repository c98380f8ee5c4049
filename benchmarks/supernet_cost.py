"""Cost of the supernet against the standalone network of the same path, on CPU.

For the ImageNet space (batch 8, 224×224) and the CIFAR space (batch 64, 32×32) it measures
step time and peak tensor memory of

  nchw_path      the baseline: the derived network of one fixed sampled path as a plain eager
                 NCHW network, fwd + bwd + torch's default SGD step (the original's weight step)
  standalone     that network as `proxyless-train` runs it (`memory_format: auto`, fused SGD)
  weight_nchw    the supernet weight step on that same path, NCHW, loop SGD (before issue 14)
  weight         the supernet weight step as the search runs it (`memory_format: auto`,
                 foreach SGD)
  all_paths      arch step, memory-light exact estimator (the default)
  all_paths_sub  arch step, all_paths with batch_fraction=0.25 (extra row)
  two_path       arch step, two-path estimator (fixed pair that contains the path)
  darts          arch step, full softmax mixture (memory baseline; timed in its child only)

Arch steps and `weight` run in the search's memory format (`run.resolve_memory_format`: on
CPU channels_last). Also printed per space (`gradient_match_vs_nchw`): the relative
difference of the weight step's gradients and the all_paths α gradient to those of the NCHW
supernet on the same path, weights and batch, in float32 (with `--grad-f64` also in
float64, and each float32 result's distance to float64: slow). Timing repeats for each
`--threads` count (default 1 and 2).

Time: all timed configurations run interleaved in ONE process (A B C … per round, same path,
same batch); every ratio is the median of per-round ratios, so machine-speed drift cancels.
All of them run under the search's host-memory setting (`--host-memory`, default reuse:
freed memory is kept, so no step page-faults its activations in again; `run.host_memory`),
the plain NCHW baseline too, so the ratios compare computation only.
Memory: each (space, configuration) runs in a FRESH child process (`--child`): one warmup
step, then one step under `torch.profiler.profile(profile_memory=True)`; the peak is the
maximum of the CPU allocator's running "Total Allocated" over the step's allocation events
minus its value at the start (gradients of the warmup are dropped before, so the step's
baseline is weights + optimizer state + batch). Also printed: the arch-gradient error of
batch_fraction=0.25 against the exact all_paths gradient on one fixed batch and path.

    python benchmarks/supernet_cost.py            # full run (1 and 2 threads), ~15 min on 2 cores
    python benchmarks/supernet_cost.py --quick    # fewer rounds/draws
    python benchmarks/supernet_cost.py --quick --rounds 5 --no-memory --threads 1  # issue 14

One JSON object per row; the LAST line is the summary of ratios per input size.
"""

from __future__ import annotations

import argparse
import copy
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
from proxyless.run import HOST_MEMORY, SGDConfig, host_memory, resolve_memory_format, sgd
from proxyless.space import get_space
from proxyless.steps import arch_step, weight_step
from proxyless.supernet import SuperNet

BATCH = {"imagenet": 8, "cifar": 64}
TIMED = [
    "nchw_path",
    "standalone",
    "weight_nchw",
    "weight",
    "all_paths",
    "all_paths_sub",
    "two_path",
]
CONFIGS = [*TIMED, "darts"]
SUB_FRACTION = 0.25
SEED = 0


# --- setup -------------------------------------------------------------------------------
class Bench:
    """One supernet, its standalone path network, a fixed batch and a step per configuration."""

    def __init__(self, space_name: str, seed: int = SEED) -> None:
        torch.manual_seed(seed)
        self.space = get_space(space_name)
        self.fmt = resolve_memory_format("auto", torch.device("cpu"))
        self.net_nchw = SuperNet(self.space).train()
        gen = torch.Generator().manual_seed(seed)
        self.path = self.net_nchw.sample_paths(gen)
        ops = [
            layer.spec.candidates[i]
            for layer, i in zip(self.net_nchw.layers, self.path, strict=True)
        ]
        self.arch = Arch(self.space, ops)
        self.nchw_path = self.net_nchw.extract(self.arch).train()
        self.standalone = self.net_nchw.extract(self.arch).train().to(memory_format=self.fmt)
        self.net = copy.deepcopy(self.net_nchw).to(memory_format=self.fmt)
        b, s = BATCH[space_name], self.space.input_size
        self.x = torch.randn(b, 3, s, s, generator=gen)
        self.y = torch.randint(0, self.space.num_classes, (b,), generator=gen)
        self.x_fmt = self.x.contiguous(memory_format=self.fmt)
        plain = {"lr": 1e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 4e-5}
        ours = SGDConfig(lr=1e-3, momentum=0.9, nesterov=True, weight_decay=4e-5)
        self.n_opt = torch.optim.SGD(self.nchw_path.parameters(), **plain)  # torch's default
        self.wn_opt = torch.optim.SGD(self.net_nchw.weight_parameters(), **plain)
        self.w_opt = sgd(self.net.weight_parameters(), ours)  # as the search builds it
        self.s_opt = sgd(self.standalone.parameters(), ours, fused=True)  # as train does
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
        net, x, y = self.net, self.x_fmt, self.y
        if config in ("nchw_path", "standalone"):
            model, opt = (
                (self.nchw_path, self.n_opt)
                if config == "nchw_path"
                else (self.standalone, self.s_opt)
            )
            xs = self.x if config == "nchw_path" else x

            def run() -> None:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xs), y).backward()
                opt.step()

            return run
        if config in ("weight", "weight_nchw"):
            wnet, wx, wopt = (
                (self.net_nchw, self.x, self.wn_opt)
                if config == "weight_nchw"
                else (net, x, self.w_opt)
            )

            def run_weight() -> None:
                wnet.set_paths(self.path)
                weight_step(wnet, wx, y, wopt, resample=False)

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
        for opt in (self.n_opt, self.s_opt, self.wn_opt, self.w_opt, self.a_opt):
            opt.zero_grad(set_to_none=True)


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
def arch_grad(bench: Bench, est: Any, nchw: bool = False) -> torch.Tensor:
    net, x = (bench.net_nchw, bench.x) if nchw else (bench.net, bench.x_fmt)
    net.set_paths(bench.path)
    for a in net.arch_parameters():
        a.grad = None
    with net.frozen_weights():
        F.cross_entropy(net(x, est), bench.y).backward()
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


def _path_grads(net: SuperNet, path: list[int], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The weight step's gradient on `path` (all active weights, flattened) and ∂L/∂α of an
    all_paths arch step, concatenated: one vector per variant."""
    net.set_paths(path)
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    w = [p.grad.flatten() for p in net.weight_parameters() if p.grad is not None]
    net.zero_grad(set_to_none=True)
    with net.frozen_weights():
        F.cross_entropy(net(x, ESTIMATORS.build("all_paths")), y).backward()
    a = [p.grad.flatten() for p in net.arch_parameters()]  # type: ignore[union-attr]
    return torch.cat(w).double(), torch.cat(a).double()


def gradient_match(space_name: str, f64: bool = False) -> dict[str, Any]:
    """‖g − g_ref‖ / ‖g_ref‖ of the weight step's gradients and of the all_paths α gradient
    between the search's memory format and NCHW (same weights, batch, path), in float32 and
    in float64 (same math: only the summation order differs), and each float32 variant's
    distance to the float64 NCHW result (how far float32 itself is from exact).

    The floor for float32: NCHW against NCHW itself on 1 vs 2 threads (`…_nchw_threads`):
    the same kernels with the work split otherwise, so only the summation order differs."""
    bench = Bench(space_name)
    base = copy.deepcopy(bench.net_nchw)
    g = {}
    threads = torch.get_num_threads()
    for dtype in (torch.float32, torch.float64) if f64 else (torch.float32,):
        for fmt in (torch.contiguous_format, bench.fmt):
            net = copy.deepcopy(base).to(dtype=dtype, memory_format=fmt)
            x = bench.x.to(dtype).contiguous(memory_format=fmt)
            g[(dtype, fmt)] = _path_grads(net, bench.path, x, bench.y)
    torch.set_num_threads(1 if threads > 1 else 2)
    g["other_threads"] = _path_grads(copy.deepcopy(base), bench.path, bench.x, bench.y)
    torch.set_num_threads(threads)
    nchw, fast = torch.contiguous_format, bench.fmt
    f32, d64 = torch.float32, torch.float64

    def rel(a: Any, b: Any, i: int) -> float:
        d = float((g[a][i] - g[b][i]).norm() / g[b][i].norm())
        return float(f"{d:.3g}")

    out: dict[str, Any] = {"memory_format": str(bench.fmt).removeprefix("torch.")}
    for i, what in enumerate(("weight", "alpha")):
        out[f"{what}_grad_rel_diff_f32"] = rel((f32, fast), (f32, nchw), i)
        out[f"{what}_grad_rel_diff_f32_nchw_threads"] = rel("other_threads", (f32, nchw), i)
        if f64:
            out[f"{what}_grad_rel_diff_f64"] = rel((d64, fast), (d64, nchw), i)
            out[f"{what}_grad_nchw_f32_vs_f64"] = rel((f32, nchw), (d64, nchw), i)
            out[f"{what}_grad_fast_f32_vs_f64"] = rel((f32, fast), (d64, nchw), i)
    return out


def mem_ratio(mem: dict[str, dict[str, Any]], a: str, b: str = "weight") -> float | None:
    if not mem:  # --no-memory
        return None
    return round(mem[a]["peak_mem_mb"] / mem[b]["peak_mem_mb"], 3)


# --- main --------------------------------------------------------------------------------
def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and draws (< 3 min)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--spaces", nargs="+", default=["imagenet", "cifar"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch threads")
    ap.add_argument(
        "--no-memory", action="store_true", help="time only (the memory children take ~15 min)"
    )
    ap.add_argument(
        "--grad-f64", action="store_true", help="also float64 gradients (slow: minutes)"
    )
    ap.add_argument(
        "--host-memory",
        choices=HOST_MEMORY,
        default="reuse",
        help="allocator setting of the timed steps, all configurations alike (default: the "
        "search's and training's default, reuse; release: glibc's defaults)",
    )
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
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "batch": BATCH,
                "memory_format": str(resolve_memory_format("auto", torch.device("cpu"))),
                "host_memory": args.host_memory,
                "timing": f"{rounds} interleaved rounds after {warmup} warmup, per thread "
                "count; ratios = median of per-round ratios",
                "memory": "fresh process per (space, config), profiler allocator peak",
                "quick": args.quick,
                "reduced": "rounds 12->3, warmup 2->1, subsample draws 20->2 (batch sizes kept)"
                if args.quick
                else None,
            }
        }
    )
    summary: dict[str, Any] = {}
    mem_all = {s: {} for s in args.spaces} if args.no_memory else measure_memory(args.spaces)
    for space_name in args.spaces:
        mem = mem_all[space_name]
        grads = gradient_match(space_name, args.grad_f64)
        emit({"space": space_name, "row": "gradient_match_vs_nchw", **grads})
        times_by_t: dict[int, dict[str, list[float]]] = {}
        bench = Bench(space_name)
        with host_memory(args.host_memory):
            for threads in args.threads:
                torch.set_num_threads(threads)
                times_by_t[threads] = measure_time(bench, rounds, warmup)
        for c in CONFIGS:
            if c not in times_by_t[args.threads[0]] and not mem:
                continue  # darts is only measured for memory
            row = {"space": space_name, "batch": BATCH[space_name], "config": c, **mem.get(c, {})}
            for t, times in times_by_t.items():
                if c in times:
                    row[f"time_ms_median_t{t}"] = round(1e3 * statistics.median(times[c]), 1)
                    row[f"time_vs_weight_t{t}"] = round(paired_ratio(times, c, "weight"), 3)
                    row[f"time_vs_nchw_path_t{t}"] = round(paired_ratio(times, c, "nchw_path"), 3)
            row["mem_vs_weight"] = mem_ratio(mem, c)
            emit(row)
        err = subsample_error(bench, draws)
        emit({"space": space_name, "row": "all_paths_sub_grad_error", **err})

        def per_t(num: str, den: str, by_t: Any = times_by_t) -> dict[str, float]:
            """A time ratio per thread count ("1": …, "2": …)."""
            return {str(t): round(paired_ratio(ts, num, den), 3) for t, ts in by_t.items()}

        summary[space_name] = {
            "weight_vs_nchw_path_time": per_t("weight", "nchw_path"),
            "all_paths_vs_nchw_path_time": per_t("all_paths", "nchw_path"),
            "standalone_vs_nchw_path_time": per_t("standalone", "nchw_path"),
            "weight_vs_weight_nchw_time": per_t("weight", "weight_nchw"),
            "weight_grad_rel_diff_vs_nchw_f32": grads["weight_grad_rel_diff_f32"],
            "alpha_grad_rel_diff_vs_nchw_f32": grads["alpha_grad_rel_diff_f32"],
            "weight_grad_rel_diff_nchw_1_vs_2_threads": grads[
                "weight_grad_rel_diff_f32_nchw_threads"
            ],
            "weight_vs_standalone_mem": mem_ratio(mem, "weight", "standalone"),
            "weight_vs_standalone_time": per_t("weight", "standalone"),
            "all_paths_vs_weight_time": per_t("all_paths", "weight"),
            "all_paths_vs_weight_mem": mem_ratio(mem, "all_paths"),
            "two_path_vs_weight_time": per_t("two_path", "weight"),
            "two_path_vs_weight_mem": mem_ratio(mem, "two_path"),
            "darts_vs_weight_mem": mem_ratio(mem, "darts"),
            "all_paths_sub_vs_weight_time": per_t("all_paths_sub", "weight"),
            "all_paths_sub_vs_weight_mem": mem_ratio(mem, "all_paths_sub"),
            "all_paths_sub_rel_bias": err["rel_bias_of_mean"],
            "all_paths_sub_rel_std": err["rel_std_one_draw"],
        }
    summary["meta"] = {
        "rounds": rounds,
        "threads": args.threads,
        "time_ratios": "per torch thread count",
        "quick": args.quick,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    emit(summary)


if __name__ == "__main__":
    main()
