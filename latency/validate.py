"""Does the table predict real networks? Measure whole networks on the table's backend with
the same protocol, compare with the sum of their keys, and report how well they agree.

Honest numbers: a calibration is fitted on one subset of networks and scored only on the
others; the noise floor (the same networks measured twice) says how good agreement can get.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency.atomic import atomic_write_json
from latency.backends import Backend, get_backend
from latency.header import now_iso
from latency.metrics import fit_linear, metrics, scatter_plot
from latency.predict import Calibration, LatencyAnalysis
from latency.profile import measure_networks
from latency.protocol import Builder, Protocol
from latency.table import Entry, LatencyTable


@dataclass(frozen=True)
class Network:
    """A network to validate: how to build it, and the table keys it is made of."""

    name: str
    build: Builder
    keys: Sequence[str]


def split_for_calibration(names: Sequence[str], fraction: float, seed: int = 0) -> list[str]:
    """A seeded random subset to fit on; always leaves at least one network to score."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"calibration fraction must be in [0, 1), got {fraction}")
    k = min(max(round(fraction * len(names)), 1 if fraction > 0 else 0), len(names) - 1)
    return sorted(random.Random(seed).sample(list(names), k))


def validate(
    table: LatencyTable,
    networks: Sequence[Network],
    backend: Backend | str,
    protocol: Protocol | None = None,
    calibrate_on: Sequence[str] | float = 0.0,
    noise_floor: bool = True,
    out_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    seed: int = 0,
    measure: Callable[..., dict[str, Entry]] = measure_networks,
) -> dict[str, Any]:
    """Return (and with `out_dir`, write `validation.json` + `validation.png`) the summary.

    `calibrate_on`: names of networks to fit `measured ≈ a·sum + b` on, or a fraction of
    them picked with `seed`; the fit goes to `table.header.calibration` (save the table to
    keep it). `measure` is injectable so the arithmetic can be tested on fixed numbers.
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    table.header.require(
        {"backend": backend.name},
        force,
        asked="validation",
        fix="validate on the table's backend, or pass force=True",
    )
    names = [n.name for n in networks]
    if len(set(names)) != len(names):
        raise ValueError("network names must be unique")
    LatencyAnalysis.of_keys(table, [k for n in networks for k in n.keys]).check()
    protocol = protocol or (
        Protocol.from_dict(table.header.protocol) if table.header.protocol else Protocol()
    )
    builders = {n.name: n.build for n in networks}
    # Raw sums: the calibration is what this fits (and a stored one must not feed its refit).
    predicted = {n.name: LatencyAnalysis.of_keys(table, n.keys, False).total() for n in networks}
    # Both passes time the same prepared runs (one ONNX export per network, not two).
    prepared: dict[str, Any] = {}
    first = measure(builders, backend, protocol, progress=progress, prepared=prepared)
    measured = {k: first[k].ms for k in names}
    pred = [predicted[k] for k in names]
    summary: dict[str, Any] = {
        "date": now_iso(),
        "backend": backend.name,
        "device": table.header.device,
        **metrics(pred, [measured[k] for k in names]),
    }
    rows = [{"name": k, "predicted_ms": predicted[k], "measured_ms": measured[k]} for k in names]
    if noise_floor:
        again = measure(builders, backend, protocol, progress=progress, prepared=prepared)
        summary["noise_floor"] = metrics([measured[k] for k in names], [again[k].ms for k in names])
        for row in rows:
            row["measured_again_ms"] = again[row["name"]].ms
    fit_on = (
        split_for_calibration(names, calibrate_on, seed)
        if isinstance(calibrate_on, float | int)
        else sorted(calibrate_on)
    )
    calibrated: list[float | None] | None = None
    if fit_on:
        summary["calibrated"], cal = _calibrate(table, names, fit_on, predicted, measured)
        calibrated = [cal.get(k) for k in names]
        for row in rows:
            row["split"] = "fit" if row["name"] in fit_on else "score"
            row["calibrated_ms"] = cal.get(row["name"])
    summary["networks"] = rows
    if out_dir is not None:
        out = Path(out_dir)
        scatter_plot(
            pred,
            [measured[k] for k in names],
            out / "validation.png",
            title=f"{backend.name} on {table.header.device}",
            calibrated=calibrated,
        )
        atomic_write_json(out / "validation.json", summary)
    return summary


def _calibrate(
    table: LatencyTable,
    names: Sequence[str],
    fit_on: Sequence[str],
    predicted: dict[str, float],
    measured: dict[str, float],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit `measured ≈ a·sum + b` on `fit_on`, store it in the table header, and score it on
    the other networks: (summary, calibrated prediction per scored network)."""
    if unknown := set(fit_on) - set(names):
        raise ValueError(f"calibrate_on names unknown networks: {sorted(unknown)}")
    scored = [k for k in names if k not in set(fit_on)]
    if not scored:
        raise ValueError("calibration would use every network; leave some to score on")
    fit = Calibration(*fit_linear([predicted[k] for k in fit_on], [measured[k] for k in fit_on]))
    table.header.calibration = {
        "kind": "linear",
        "a": fit.a,
        "b": fit.b,
        "fit_on": list(fit_on),
        "date": now_iso(),
    }
    cal = {k: fit(predicted[k]) for k in scored}
    summary = {
        **metrics([cal[k] for k in scored], [measured[k] for k in scored]),
        "raw_same_networks": metrics([predicted[k] for k in scored], [measured[k] for k in scored]),
        "a": fit.a,
        "b": fit.b,
        "fit_on": list(fit_on),
        "scored_on": scored,
    }
    return summary, cal
