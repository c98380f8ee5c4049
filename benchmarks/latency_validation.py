"""Latency-table figures on the ImageNet space, batch 1, 1 thread: profile each CPU backend's
table (timed), then validate it on sampled architectures (raw sum, held-out calibration,
noise floor). Runs the two CLIs one after another (never two timing jobs at once):

    PYTHONPATH=. python benchmarks/latency_validation.py --out bench_latency --n-archs 300
    PYTHONPATH=. python benchmarks/latency_validation.py --backends ort-cpu --runs 3
    PYTHONPATH=. python benchmarks/latency_validation.py --backends torch-cpu --n-archs 400 \
        --calibrate 0.25 --protocol protocol.rounds=4

`--runs N`: N independent runs, each with a fresh table and its own sampled architectures
(seed = run index), so the spread over runs says whether a figure holds from run to run.
`--protocol` overrides apply to the table and the networks alike; `--net-protocol` to the
networks only. Each step is a plain CLI command (printed before it runs), so any figure can be
reproduced alone. Writes <out>/run<i>/<backend>.json (table), <out>/run<i>/val_<backend>/
validation.{json,png} and <out>/figures.json (per run, and min/max over runs per backend).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

FIGURES = ("within_10pct", "within_5pct", "spearman", "mape")


def sh(cmd: list[str]) -> float:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def brief(m: dict) -> dict:
    return {k: m[k] for k in ("n", *FIGURES) if k in m}


def spread(runs: list[dict]) -> dict:
    """min/max over runs of every figure of every block ('raw', 'calibrated_held_out', ...)."""
    out: dict = {}
    for block in ("raw", "calibrated_held_out", "noise_floor"):
        vals = [r[block] for r in runs if r.get(block)]
        out[block] = {
            k: [min(v[k] for v in vals), max(v[k] for v in vals)] for k in FIGURES if vals
        }
    secs = [r["validate_s"] for r in runs]
    out["validate_s"] = [min(secs), max(secs)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_latency"))
    ap.add_argument("--backends", nargs="+", default=["ort-cpu", "torch-cpu"])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--n-archs", type=int, default=300)
    ap.add_argument("--calibrate", type=float, default=0.1)
    ap.add_argument("--protocol", nargs="*", default=[], help="protocol.* for table and networks")
    ap.add_argument("--net-protocol", nargs="*", default=[], help="protocol.* for networks only")
    ap.add_argument("--validate", nargs="*", default=[], help="other proxyless-validate overrides")
    args = ap.parse_args()
    bin_dir = Path(sys.executable).parent
    done = args.out / "figures.json"
    figures: dict = json.loads(done.read_text()) if done.exists() else {}
    for run in range(args.runs):
        for be in args.backends:
            out = args.out / f"run{run}"
            out.mkdir(parents=True, exist_ok=True)
            table = out / f"{be}.json"
            prof = [str(bin_dir / "proxyless-profile"), "space=imagenet", f"backend={be}"]
            secs = sh([*prof, f"out={table}", *args.protocol]) if not table.exists() else None
            val_dir = out / f"val_{be}"
            sh(
                [
                    str(bin_dir / "proxyless-validate"),
                    "space=imagenet",
                    f"table={table}",
                    f"n_archs={args.n_archs}",
                    f"calibrate={args.calibrate}",
                    f"seed={run}",
                    f"hydra.run.dir={val_dir}",
                    *args.protocol,
                    *args.net_protocol,
                    *args.validate,
                ]
            )
            s = json.loads((val_dir / "validation.json").read_text())
            cal = s.get("calibrated", {})
            figures.setdefault(be, {}).setdefault("runs", {})[f"run{run}"] = {
                "profile_wall_s (70 keys, incl. startup)": secs and round(secs, 1),
                "raw": brief(s),
                "calibrated_held_out": brief(cal),
                "calibration_model": cal.get("model", "linear"),
                "raw_same_held_out": brief(cal.get("raw_same_networks", {})),
                "noise_floor": brief(s.get("noise_floor", {})),
                "linear_only_held_out": brief(cal.get("linear_same_networks", {})),
                "speed_vs_table": s.get("speed_vs_table"),
                "validate_s": s["seconds"],
                "seconds_by_step": s.get("seconds_by_step"),
                "peak_rss_mib": s.get("peak_rss_mib"),
                "protocol": s["protocol"],
            }
            runs = list(figures[be]["runs"].values())
            figures[be]["over_runs"] = {"runs": len(runs), **spread(runs)}
            done.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
