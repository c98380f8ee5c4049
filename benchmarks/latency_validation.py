"""Latency-table figures on the ImageNet space, batch 1, 1 thread: profile each CPU backend's
table (timed), then validate it on sampled architectures (raw sum, held-out calibration,
noise floor). Runs the two CLIs one after another (never two timing jobs at once):

    PYTHONPATH=. python benchmarks/latency_validation.py --out bench_latency --n-archs 300
    PYTHONPATH=. python benchmarks/latency_validation.py --backends torch-cpu --n-archs 100 \
        --net-protocol protocol.rounds=4

Each step is a plain CLI command (printed before it runs), so any figure can be reproduced
alone. Writes <out>/<backend>.json (table), <out>/val_<backend>/validation.{json,png} and
<out>/figures.json (profiling time + the three summaries per backend).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


def sh(cmd: list[str]) -> float:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def brief(m: dict) -> dict:
    keep = ("n", "within_10pct", "within_5pct", "spearman", "mape")
    return {k: m[k] for k in keep if k in m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_latency"))
    ap.add_argument("--backends", nargs="+", default=["ort-cpu", "torch-cpu"])
    ap.add_argument("--n-archs", type=int, default=300)
    ap.add_argument("--calibrate", type=float, default=0.1)
    ap.add_argument("--net-protocol", nargs="*", default=[], help="protocol.* overrides")
    args = ap.parse_args()
    bin_dir = Path(sys.executable).parent
    done = args.out / "figures.json"
    figures: dict = json.loads(done.read_text()) if done.exists() else {}
    for be in args.backends:
        table = args.out / f"{be}.json"
        prof = [str(bin_dir / "proxyless-profile"), "space=imagenet", f"backend={be}"]
        secs = sh([*prof, f"out={table}"]) if not table.exists() else None
        val_dir = args.out / f"val_{be}"
        sh(
            [
                str(bin_dir / "proxyless-validate"),
                "space=imagenet",
                f"table={table}",
                f"n_archs={args.n_archs}",
                f"calibrate={args.calibrate}",
                f"hydra.run.dir={val_dir}",
                *args.net_protocol,
            ]
        )
        s = json.loads((val_dir / "validation.json").read_text())
        figures[be] = {
            "profile_wall_s (70 keys, incl. startup)": secs and round(secs, 1),
            "raw": brief(s),
            "calibrated_held_out": brief(s.get("calibrated", {})),
            "raw_same_held_out": brief(s.get("calibrated", {}).get("raw_same_networks", {})),
            "noise_floor": brief(s.get("noise_floor", {})),
            "validate_s": s["seconds"],
            "protocol": s["protocol"],
        }
        done.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
