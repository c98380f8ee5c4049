"""Wall time of quickstart search epochs, two source trees side by side (issue 14).

Each run is a fresh process: the quickstart config (configs/search.yaml) with 2 warmup and 2
search epochs, 1 thread, timing `_Search.epoch`. Runs alternate A B A B … so machine-speed
drift cancels; ratios are per pair, B over A. Make tree A with e.g.
`git archive <rev> | tar -x -C /tmp/base`.

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

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from proxyless import search as S
from proxyless.cli._common import config_dir
from proxyless.search_config import SearchConfig
times, orig = [], S._Search.epoch
def timed(self, epoch):
    t = time.perf_counter(); out = orig(self, epoch); times.append(time.perf_counter() - t)
    return out
S._Search.epoch = timed
over = ["threads=1", "schedule.warmup_epochs=2", "schedule.epochs=2", "log.progress=false",
        f"run_dir={sys.argv[2]}"]
with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
    cfg = OmegaConf.to_container(compose(config_name="search", overrides=over), resolve=True)
cfg.pop("hydra", None)
S.search(SearchConfig.from_dict(cfg))
print(json.dumps({"tree": sys.argv[1], "epochs_s": times}))
"""


def run(tree: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, os.path.abspath(tree), d],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])["epochs_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trees", nargs=2, required=True, metavar=("A", "B"))
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    pairs = [(run(args.trees[0]), run(args.trees[1])) for _ in range(args.pairs)]
    for a, b in pairs:
        print(json.dumps({"A": a, "B": b}))
    summary = {}
    for name, sl in (("warmup", slice(0, 2)), ("search", slice(2, 4)), ("all", slice(0, 4))):
        ratios = [sum(b[sl]) / sum(a[sl]) for a, b in pairs]
        summary[f"{name}_epoch_B_vs_A"] = round(statistics.median(ratios), 3)
        summary[f"{name}_epoch_B_vs_A_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
