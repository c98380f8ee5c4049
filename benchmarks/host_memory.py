"""Step time and page faults under `host_memory: reuse` against glibc's defaults (`release`).

An allocator setting holds for a whole process, so each setting gets its own process (spawned,
so each starts from glibc's defaults); both build the same supernet, path and batch
(`supernet_cost.Bench`, same seed) and the parent has them time one step in turn, A B A B …,
one process idle while the other runs, so machine-speed drift cancels in the per-round
ratios. Printed per (space, step): median ms of each, the median per-round ratio
reuse / release, and minor page faults per step.

    python benchmarks/host_memory.py                  # ImageNet b8 and CIFAR b64, 1 thread
    python benchmarks/host_memory.py --rounds 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

STEPS = ("nchw_path", "weight", "all_paths")


def worker(conn: Any, mode: str, space: str, threads: int) -> None:
    """Serve 'time <step>' requests: (seconds, minor faults) of one step."""
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from supernet_cost import Bench

    from proxyless.run import host_memory

    torch.set_num_threads(threads)
    with host_memory(mode):
        bench = Bench(space)
        steps = {s: bench.step(s) for s in STEPS}
        for step in steps.values():  # warm up: first allocations, oneDNN primitives
            step()
            step()
        conn.send("ready")
        while (msg := conn.recv()) != "stop":
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            steps[msg]()
            dt = time.perf_counter() - t
            conn.send((dt, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spaces", nargs="+", default=["imagenet", "cifar"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    summary: dict[str, Any] = {}
    for space in args.spaces:
        procs, conns = {}, {}
        for mode in ("release", "reuse"):
            parent, child = ctx.Pipe()
            procs[mode] = ctx.Process(target=worker, args=(child, mode, space, args.threads))
            procs[mode].start()
            conns[mode] = parent
        for conn in conns.values():
            assert conn.recv() == "ready"
        res: dict[str, dict[str, list[Any]]] = {s: {"release": [], "reuse": []} for s in STEPS}
        for _ in range(args.rounds):
            for step in STEPS:
                for mode in ("release", "reuse"):
                    conns[mode].send(step)
                    res[step][mode].append(conns[mode].recv())
        for conn in conns.values():
            conn.send("stop")
        for p in procs.values():
            p.join()
        summary[space] = {}
        for step in STEPS:
            rel, reu = res[step]["release"], res[step]["reuse"]
            row = {
                "space": space,
                "step": step,
                "threads": args.threads,
                "release_ms": round(1e3 * statistics.median(t for t, _ in rel), 1),
                "reuse_ms": round(1e3 * statistics.median(t for t, _ in reu), 1),
                "reuse_vs_release_time": round(
                    statistics.median(b[0] / a[0] for a, b in zip(rel, reu, strict=True)), 3
                ),
                "release_faults_per_step": int(statistics.median(f for _, f in rel)),
                "reuse_faults_per_step": int(statistics.median(f for _, f in reu)),
            }
            print(json.dumps(row), flush=True)
            summary[space][f"{step}_reuse_vs_release_time"] = row["reuse_vs_release_time"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
