#!/usr/bin/env python3
"""Measure a latency bundle on the device itself (phone, Raspberry Pi, Jetson...).

Standalone on purpose: needs only Python 3, numpy and onnxruntime (no torch, no proxyless),
so it runs in Termux or on a board. Same protocol as latency/protocol.py: warmup, adaptive
windows, interleaved shuffled rounds, per-call timing, window minima, a reference item for
machine speed, a low quantile over rounds; p10/p90 of all calls. Resumable: keys already in
the results file are skipped.

    python latency_runner.py BUNDLE_DIR --out results.json --threads 1
    python latency_runner.py BUNDLE_DIR --out results.json --threads 1 --stream  # 8 models open
Then copy results.json back and import it with latency.bundle.import_results.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

FORMAT = "proxyless-latency-results/1"
STREAM_CHUNK = 8  # as latency.stash.Stash's `live`: each model opened once, 8 at a time
DEFAULTS = {
    "warmup": 10,
    "rounds": 7,
    "repeats": 5,
    "max_repeats": 200,
    "window_ms": 5.0,
    "quantile": 0.25,
    "reference_every": 8,
    "speed_correction": True,
    "seed": 0,
}


def device_info(threads: int, provider: str) -> dict:
    """What the device is, for the table header (tables from other devices are refused)."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware") and value.strip():
                name = value.strip()
                break
    except OSError:
        pass
    try:  # Android: the phone model says more than the CPU line
        model = subprocess.run(
            ["getprop", "ro.product.model"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        name = f"{model} ({name})" if model and name else model or name
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "name": name or platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "provider": provider,
        "threads": threads,
    }


def session(path: Path, threads: int, provider: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=[provider])


def time_calls(run, repeats: int) -> np.ndarray:
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        run()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


class Sessions:
    """Runs of bundle items by key, each model opened once (memory: the models of one
    chunk; `--stream` keeps chunks small for boards with little memory)."""

    def __init__(self, bundle: Path, items: list, threads: int, provider: str):
        self.bundle, self.threads, self.provider = bundle, threads, provider
        self.items = {it["key"]: it for it in items}
        self.runs = {k: self._open(k) for k in self.items}

    def _open(self, key: str):
        it = self.items[key]
        sess = session(self.bundle / it["file"], self.threads, self.provider)
        x = np.random.default_rng(0).standard_normal(it["input_shape"]).astype(it["dtype"])
        feed = {it["input_name"]: x}
        return lambda: sess.run(None, feed)


def measure(runs: Sessions, p: dict, log=print) -> dict:
    """The protocol (mirror of latency.protocol.measure for one chunk); returns {key: entry}."""
    keys = list(runs.items)
    first, reps = {}, {}
    for k in keys:
        run = runs.runs[k]
        for _ in range(p["warmup"]):
            run()
        first[k] = float(np.median(time_calls(run, 3)))
        want = math.ceil(p["window_ms"] / max(first[k], 1e-6))
        reps[k] = int(min(max(want, p["repeats"]), p["max_repeats"]))
    ref = sorted(keys, key=lambda k: first[k])[len(keys) // 2]
    ref_run = runs.runs[ref]
    rng, refs, pending = random.Random(p["seed"]), [], []
    gc.disable()
    try:
        for r in range(p["rounds"]):
            order = keys[:]
            rng.shuffle(order)
            for i, k in enumerate(order):
                if i % max(p["reference_every"], 1) == 0:
                    refs.append(time_calls(ref_run, reps[ref]).min())
                pending.append((k, time_calls(runs.runs[k], reps[k]), len(refs) - 1))
            refs.append(time_calls(ref_run, reps[ref]).min())
            log(f"round {r + 1}/{p['rounds']} done ({len(keys)} models)")
    finally:
        gc.enable()
    best = min(refs)
    windows = {k: [] for k in keys}
    calls = {k: [] for k in keys}
    for k, t, j in pending:
        scale = best / min(refs[j], refs[j + 1]) if p["speed_correction"] else 1.0
        windows[k].append(float(t.min()) * scale)
        calls[k].append(t * scale)
    out = {}
    for k in keys:
        c = np.concatenate(calls[k])
        out[k] = {
            "ms": float(np.quantile(windows[k], p["quantile"])),
            "calls_p10_ms": float(np.quantile(c, 0.1)),
            "calls_p90_ms": float(np.quantile(c, 0.9)),
            "n": int(c.size),
        }
    return out


def write_json(path: Path, obj: dict) -> None:
    """Atomic: an interrupted run never leaves a broken results file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="folder with manifest.json")
    ap.add_argument("--out", type=Path, help="results JSON (default BUNDLE/results.json)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--provider", default="CPUExecutionProvider")
    ap.add_argument(
        "--chunk", type=int, default=0, help="models open at once; results saved after each chunk"
    )
    ap.add_argument(
        "--stream",
        action="store_true",
        help=f"little memory: measure in chunks of {STREAM_CHUNK} models (unless --chunk says)",
    )
    for name, value in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            ap.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        else:
            ap.add_argument(flag, type=type(value), default=None)
    args = ap.parse_args(argv)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    proto = {**DEFAULTS, **manifest.get("protocol", {})}
    proto.update({k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None})
    proto = {k: proto[k] for k in DEFAULTS}
    out = args.out or args.bundle / "results.json"
    info = device_info(args.threads, args.provider)
    results: dict = {}
    if out.exists():
        old = json.loads(out.read_text())
        if old.get("device") == info and old.get("protocol") == proto:
            results = old["results"]
            print(f"resuming: {len(results)} keys already measured")
    todo = [it for it in manifest["items"] if it["key"] not in results]
    if not todo:
        print(f"nothing to measure: all {len(results)} keys are in {out}")
    size = args.chunk or (STREAM_CHUNK if args.stream else 0) or max(len(todo), 1)
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        runs = Sessions(args.bundle, chunk, args.threads, args.provider)
        results.update(measure(runs, proto))
        del runs
        write_json(
            out,
            {
                "format": FORMAT,
                "device": info,
                "protocol": proto,
                "batch": manifest["batch"],
                "dtype": manifest["dtype"],
                "streamed": args.stream,
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "results": results,
            },
        )
        print(f"{len(results)}/{len(manifest['items'])} keys measured -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
