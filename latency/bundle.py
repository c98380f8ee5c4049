"""Mobile path: export every key as a small ONNX model into a bundle folder, measure it on
the device with scripts/latency_runner.py (onnxruntime only), import the results as a table.

The bundle is self-describing (`manifest.json`), so the runner needs nothing but the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from latency.atomic import atomic_write_json
from latency.errors import TableError
from latency.header import TableHeader, now_iso
from latency.onnx_export import INPUT_NAME, OPSET, export_onnx
from latency.protocol import Builder, Protocol
from latency.table import Entry, LatencyTable

MANIFEST_FORMAT = "proxyless-latency-bundle/1"
RESULTS_FORMAT = "proxyless-latency-results/1"


def write_bundle(
    items: Mapping[str, Builder],
    folder: str | os.PathLike[str],
    batch: int,
    dtype: str | torch.dtype = "float32",
    protocol: Protocol | None = None,
) -> Path:
    """Export each item to `folder/models/<key>.onnx` and write `folder/manifest.json`.

    Models already in the folder are kept (keys are canonical, so same key = same model):
    re-running after adding keys exports only the new ones. Returns the manifest path.
    """
    folder = Path(folder)
    dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    name = str(dt).removeprefix("torch.")
    entries = []
    for key, build in items.items():
        path = folder / "models" / f"{key}.onnx"
        module, x = build()
        x = x.to(dt)
        if int(x.shape[0]) != batch:
            raise TableError(f"item {key!r} has batch {x.shape[0]}, the bundle asks {batch}")
        if not path.exists():
            export_onnx(module.to(dt), x, path)
        entries.append(
            {
                "key": key,
                "file": f"models/{key}.onnx",
                "input_name": INPUT_NAME,
                "input_shape": list(x.shape),
                "dtype": name,
            }
        )
    manifest = {
        "format": MANIFEST_FORMAT,
        "batch": batch,
        "dtype": name,
        "opset": OPSET,
        "created": now_iso(),
        "protocol": (protocol or Protocol()).to_dict(),
        "items": entries,
    }
    return atomic_write_json(folder / "manifest.json", manifest)


def import_results(
    results_json: str | os.PathLike[str], header_fields: Mapping[str, Any] | None = None
) -> LatencyTable:
    """Turn a runner's results file into a table; `header_fields` override or add header
    fields (e.g. `device="Pixel 7"`, `backend="ort-mobile"`, `profile_command=...`)."""
    path = Path(results_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TableError(
            f"cannot read runner results {str(path)!r} ({e}); run scripts/latency_runner.py "
            "on the device and copy its results JSON back"
        ) from None
    if data.get("format") != RESULTS_FORMAT:
        raise TableError(
            f"{str(path)!r} is not a latency_runner results file "
            f"(format {data.get('format')!r}, expected {RESULTS_FORMAT!r})"
        )
    dev = data["device"]
    header = TableHeader(
        device=dev["name"],
        backend="ort-mobile",
        batch=int(data["batch"]),
        dtype=data["dtype"],
        threads=int(dev["threads"]),
        date=data["date"],
        protocol=dict(data["protocol"]),
        versions={
            k: str(dev[k]) for k in ("onnxruntime", "python", "platform", "provider") if k in dev
        },
    )
    for k, v in (header_fields or {}).items():
        if not hasattr(header, k):
            raise TableError(f"unknown header field {k!r}; known: {list(header.to_dict())}")
        setattr(header, k, v)
    table = LatencyTable(header)
    for key, e in data["results"].items():
        table.add(key, Entry.from_dict(e, f"{path}: result {key!r}"))
    return table
