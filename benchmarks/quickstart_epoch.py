"""Wall time of quickstart search epochs, two source trees side by side (issue 14).

Each run is a fresh process: the quickstart config (configs/search.yaml) with 2 warmup and 2
search epochs (`--warmup-epochs`, `--search-epochs`), 1 thread, timing `_Search.epoch`; the
search phase also counts `Reporter.close` (work an epoch left to a background thread, such
as its heatmap, is waited for there). Besides wall time, the process's CPU time per epoch
(all threads: a background heatmap counts where it runs), which a shared machine's stolen
time moves less. Runs alternate A B A B … so machine-speed
drift cancels; ratios are per pair, B over A. Make tree A with e.g.
`git archive <rev> | tar -x -C /tmp/base`. `--set` applies Hydra overrides to both trees, so
that a recipe both know (e.g. `schedule.sampler=uniform`) is timed with the same computation.

    python benchmarks/quickstart_epoch.py --trees /tmp/base . --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from proxyless import search as S
from proxyless import search_report as R
from proxyless.cli._common import config_dir
from proxyless.search_config import SearchConfig
times, cpu, orig = [], [], S._Search.epoch
def timed(self, epoch):
    t, c = time.perf_counter(), time.process_time()
    out = orig(self, epoch)
    times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    return out
S._Search.epoch = timed
closing, close = [], R.Reporter.close
def timed_close(self):
    t = time.perf_counter(); close(self); closing.append(time.perf_counter() - t)
R.Reporter.close = timed_close
over = ["threads=1", f"schedule.warmup_epochs={sys.argv[3]}", f"schedule.epochs={sys.argv[4]}",
        "log.progress=false", f"run_dir={sys.argv[2]}", f"hardware.cache_dir={sys.argv[5]}",
        *json.loads(sys.argv[6])]
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = OmegaConf.to_container(compose(config_name="search", overrides=over), resolve=True)
cfg.pop("hydra", None)
S.search(SearchConfig.from_dict(cfg))
print(json.dumps({"tree": sys.argv[1], "epochs_s": times, "close_s": sum(closing), "cpu_s": cpu}))
"""


def run(tree: str, warmup: int, search: int, cache: str, overrides: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                os.path.abspath(tree),
                d,
                str(warmup),
                str(search),
                cache,
                json.dumps(overrides),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
    if out.returncode != 0:
        sys.exit(f"the search in tree {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", nargs=2, required=True, metavar=("A", "B"))
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides for both trees, e.g. schedule.sampler=uniform to time the same "
        "search in a tree whose default sampler differs",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    w, n = args.warmup_epochs, args.search_epochs
    pairs = []
    # each tree its own latency cache (profiled once, outside the timed epochs): trees from
    # either side of a table-format change cannot share one
    caches = tempfile.TemporaryDirectory()
    for _ in range(args.pairs):
        a, b = (
            run(tree, w, n, os.path.join(caches.name, side), args.set)
            for side, tree in zip("AB", args.trees, strict=True)
        )
        print(json.dumps({"A": a, "B": b}))
        pairs.append((a, b))

    def phase(r: dict[str, Any], name: str, key: str) -> float:
        e, close = r[key], r["close_s"] if key == "epochs_s" else 0.0
        return {"warmup": sum(e[:w]), "search": sum(e[w:]) + close, "all": sum(e) + close}[name]

    summary: dict[str, Any] = {"warmup_epochs": w, "search_epochs": n, "set": args.set}
    for key, label in (("epochs_s", ""), ("cpu_s", "_cpu")):
        for name in ("warmup", "search", "all"):
            ratios = [phase(b, name, key) / phase(a, name, key) for a, b in pairs]
            summary[f"{name}_epoch{label}_B_vs_A"] = round(statistics.median(ratios), 3)
            summary[f"{name}_epoch{label}_B_vs_A_range"] = [
                round(min(ratios), 3),
                round(max(ratios), 3),
            ]
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
