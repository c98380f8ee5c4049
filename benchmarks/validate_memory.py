"""Peak resident memory of `proxyless-validate` on the ImageNet space, per backend and
number of networks, and per source tree (before/after side by side in one run):

    PYTHONPATH=. python benchmarks/validate_memory.py --n-archs 300
    PYTHONPATH=. python benchmarks/validate_memory.py --trees /path/to/old/tree . --n-archs 40 80

Each run is one `python -m proxyless.cli.validate` child run in <tree> with PYTHONPATH=<tree>
and one thread; its peak RSS is the child's own `ru_maxrss` (os.wait4). Missing tables are profiled
first with a tiny protocol (enough for a memory figure, not for accuracy). The validation
uses the fast protocol below unless `--protocol` says otherwise. One JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

FAST = ["protocol.warmup=1", "protocol.rounds=1", "protocol.repeats=1", "protocol.window_ms=1"]


def child(tree: Path, module: str, args: list[str]) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of `python -m module args` run with PYTHONPATH=tree."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve()), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", module, *args]
    print("$ PYTHONPATH=" + str(tree), " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    t0 = time.perf_counter()
    # cwd=tree: `python -m` puts the working directory first on sys.path
    proc = subprocess.Popen(cmd, env=env, cwd=tree.resolve(), stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{module} failed (exit status {status})")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0  # Linux: ru_maxrss in KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_validate_memory"))
    ap.add_argument("--backends", nargs="+", default=["ort-cpu", "torch-cpu"])
    ap.add_argument("--n-archs", nargs="+", type=int, default=[300])
    ap.add_argument("--trees", nargs="+", type=Path, default=[Path(".")])
    ap.add_argument("--protocol", nargs="*", default=FAST, help="protocol.* overrides")
    ap.add_argument("--extra", nargs="*", default=[], help="more validate overrides")
    args = ap.parse_args()
    for be in args.backends:
        table = (args.out / f"{be}.json").resolve()
        if not table.exists():
            profile = ["space=imagenet", f"backend={be}", f"out={table}", *FAST]
            child(args.trees[-1], "proxyless.cli.profile", profile)
        for n in args.n_archs:
            for i, tree in enumerate(args.trees):
                run_dir = (args.out / f"val_{be}_{n}_tree{i}").resolve()
                rss, wall = child(
                    tree,
                    "proxyless.cli.validate",
                    [
                        "space=imagenet",
                        f"table={table}",
                        f"n_archs={n}",
                        f"hydra.run.dir={run_dir}",
                        *args.protocol,
                        *args.extra,
                    ],
                )
                streamed = json.loads((run_dir / "validation.json").read_text()).get("streamed")
                row = {
                    "tree": str(tree),
                    "backend": be,
                    "n_archs": n,
                    "streamed": bool(streamed),
                    "peak_rss_mib": round(rss),
                    "wall_s": round(wall, 1),
                    "protocol": " ".join(args.protocol),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
