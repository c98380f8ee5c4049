"""The hardware side of a search, resolved once: per-candidate costs of the space (latency
from a table (LUT), profiled on demand, or FLOPs / parameter counts (fvcore) as stand-ins),
the target, and the objective that combines them with the task loss (`Hardware`).

Every cost is split as the search needs it: a `fixed` part (stem, first block, head and
classifier: paid by every arch) plus one cost per candidate of every searchable layer
(Zero costs 0). Keys and per-key modules come from `proxyless.latency_bridge`, so the
profiled table, the table lookup and the FLOPs count all see the same ops.

>>> from proxyless.space import get_space
>>> costs = layer_costs(get_space("tiny"), HardwareConfig(kind="params"))
>>> costs.unit, len(costs.per_layer)
('Kparams', 6)
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latency.errors import MissingKeyError, TableError
from latency.keys import OpKey
from latency.predict import Calibration
from latency.table import LatencyTable

from . import latency_bridge as bridge
from .arch import Arch
from .distributed import DistContext, broadcast_object
from .objective import Objective, ObjectiveConfig, build_objective
from .space import SearchSpace

log = logging.getLogger(__name__)

COST_KINDS = ("lut", "profile", "flops", "params")
# Unit → factor from the base unit of its kind (ms, MFLOPs, Kparams). mul_log needs T > 1,
# so tiny spaces use the small units (us, KFLOPs).
UNITS = {
    "lut": {"ms": 1.0, "us": 1e3},
    "profile": {"ms": 1.0, "us": 1e3},
    "flops": {"MFLOPs": 1.0, "KFLOPs": 1e3, "GFLOPs": 1e-3},
    "params": {"Kparams": 1.0, "Mparams": 1e-3},
}


class CostError(ValueError):
    """Costs cannot be computed as configured; the message says how to fix it."""


@dataclass
class HardwareConfig:
    """Where candidate costs come from (`hardware=` in the CLI) and the target, in its unit.

    lut: `table` is a latency-table JSON; `backend`/`device` (optional) must match its header
    unless `force`. profile: measure a table with `backend` on this machine, cached under
    `cache_dir` (only missing keys are measured). flops/params: fvcore on each op's input.
    """

    kind: str = "flops"
    target: float | None = None
    target_frac: float | None = None  # target = min + frac·(max − min) when `target` is None
    table: str | None = None
    backend: str | None = None
    device: str | None = None
    force: bool = False
    batch: int = 1
    threads: int = 1
    cache_dir: str = "~/.cache/proxyless/latency"
    unit: str | None = None  # None: the kind's base unit (ms, MFLOPs, Kparams)
    calibrated: bool | None = None  # None: apply the table's calibration if it has one

    def __post_init__(self) -> None:
        if self.kind not in COST_KINDS:
            raise CostError(f"unknown hardware kind {self.kind!r}; choose one of {COST_KINDS}")
        if self.unit is None:
            self.unit = next(iter(UNITS[self.kind]))
        if self.unit not in UNITS[self.kind]:
            raise CostError(
                f"hardware.unit={self.unit!r} is not a unit of {self.kind!r}; "
                f"choose one of {list(UNITS[self.kind])}"
            )
        if self.target_frac is not None and not 0.0 <= self.target_frac <= 1.0:
            raise CostError(f"hardware.target_frac={self.target_frac} must be in [0, 1]")

    @property
    def scale(self) -> float:
        return UNITS[self.kind][self.unit]  # type: ignore[index]


@dataclass
class SpaceCosts:
    """Costs of every candidate (per_layer[l][j]) plus the fixed part, in `unit`."""

    per_layer: list[list[float]]
    fixed: float
    unit: str
    source: str = ""
    # The table calibration folded into the costs (`a`, `b` in ms, ...); None: raw sums.
    calibration: dict[str, Any] | None = None

    def min_cost(self) -> float:
        return self.fixed + sum(min(c) for c in self.per_layer)

    def max_cost(self) -> float:
        return self.fixed + sum(max(c) for c in self.per_layer)

    def min_indices(self) -> list[int]:
        return [min(range(len(c)), key=c.__getitem__) for c in self.per_layer]

    def scaled(self, factor: float, unit: str) -> SpaceCosts:
        per_layer = [[c * factor for c in row] for row in self.per_layer]
        return SpaceCosts(per_layer, self.fixed * factor, unit, self.source, self.calibration)

    def cost_of(self, indices: list[int]) -> float:
        return self.fixed + sum(c[i] for c, i in zip(self.per_layer, indices, strict=True))

    def target(self, cfg: HardwareConfig) -> float | None:
        """The target in `unit`: `cfg.target`, else interpolated by `cfg.target_frac` between
        the cheapest and the most expensive arch (portable across machines), else None."""
        if cfg.target is None and cfg.target_frac is not None:
            return self.min_cost() + cfg.target_frac * (self.max_cost() - self.min_cost())
        return cfg.target


@dataclass(frozen=True)
class Hardware:
    """Costs, target and objective of a search, resolved once; what the arch step receives.

    `to_dict()` is what a checkpoint (and costs.json) keeps; a resumed run passes it back as
    `saved`, so the run continues with the costs it started with (a re-profiled, noisy table
    must not change a run half-way) and nothing is profiled again."""

    costs: SpaceCosts
    target: float | None
    objective: Objective

    @classmethod
    def resolve(
        cls,
        space: SearchSpace,
        cfg: HardwareConfig,
        objective: ObjectiveConfig,
        ctx: DistContext | None = None,
        saved: dict[str, Any] | None = None,
    ) -> Hardware:
        """Distributed: costs are computed on rank 0 only and broadcast, so every rank
        searches against the same table (profiled latencies are noisy) and no two ranks
        write a cost cache at once."""
        ctx = ctx or DistContext()
        if saved is not None:
            costs = SpaceCosts(
                saved["per_layer"],
                saved["fixed"],
                saved["unit"],
                saved["source"],
                saved.get("calibration"),  # absent from checkpoints of older versions
            )
            target = saved["target"]
        else:
            built = None
            if ctx.is_main:  # cost sources build and run modules: keep the global RNG out
                with torch.random.fork_rng(devices=[]):
                    built = layer_costs(space, cfg)
            costs = broadcast_object(built, ctx)
            assert costs is not None
            target = costs.target(cfg)
        o = objective
        fn = build_objective(
            o.kind, target, o.alpha, o.beta, o.lam, (costs.min_cost(), costs.max_cost()), costs.unit
        )
        return cls(costs, target, fn)

    def to_dict(self) -> dict[str, Any]:
        c = self.costs
        return {
            "unit": c.unit,
            "source": c.source,
            "fixed": c.fixed,
            "per_layer": c.per_layer,
            "min": c.min_cost(),
            "max": c.max_cost(),
            "target": self.target,
            "calibration": c.calibration,
        }

    def describe(self) -> str:
        c = self.costs
        return (
            f"cost {c.source}: {c.min_cost():.4g} … {c.max_cost():.4g} {c.unit}, "
            f"target {'none' if self.target is None else f'{self.target:.4g}'}, "
            f"calibration {describe_calibration(c.calibration)}"
        )


def describe_calibration(cal: dict[str, Any] | None) -> str:
    """One line for logs and the summary table: what calibration the costs carry."""
    if cal is None:
        return "none (raw table sums)"
    per_key = f" and {n} per-key corrections" if (n := cal.get("per_key")) else ""
    return (
        f"applied: a·sum + b with a={cal['a']:.4g}, b={cal['b_ms']:.4g} ms{per_key} (the "
        f"table's, fitted on {cal['fit_on']} network(s); hardware.calibrated=false for raw sums)"
    )


# --- cost sources ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _fvcore_cached(space_json: str, kind: str) -> SpaceCosts:
    return _fvcore_costs(SearchSpace.from_dict(json.loads(space_json)), kind)


def _fvcore_costs(space: SearchSpace, kind: str) -> SpaceCosts:
    from latency.costs import flops, params

    def measure(key: OpKey) -> float:
        module, x = bridge.key_builder(key, 1)()
        return flops(module, x) / 1e6 if kind == "flops" else params(module) / 1e3

    per_layer, fixed = bridge.space_costs(space, measure)
    unit = next(iter(UNITS[kind]))
    return SpaceCosts(per_layer, fixed, unit, f"fvcore {kind} (1 multiply-add = 1 flop)")


def _table_costs(
    space: SearchSpace,
    table: LatencyTable,
    path: str | Path,
    source: str,
    calibrated: bool | None = None,
) -> SpaceCosts:
    """Costs from `table`, read from `path`: a missing key names the command that measures
    exactly the missing keys of this space into that file."""
    try:
        bridge.table_missing_keys(space, table, path)
        per_layer, fixed = bridge.table_costs(space, table, calibrated)
    except MissingKeyError as e:
        raise CostError(f"{source}: {e}") from e
    except TableError as e:  # calibrated=True on a table without a calibration
        raise CostError(f"{source}: {e}; set hardware.calibrated=null or false") from e
    h = table.header
    desc = f"{source} ({h.device}, {h.backend}, batch {h.batch})"
    cal = Calibration.of(table, calibrated)
    applied = None
    if bool(h.calibration) if calibrated is None else calibrated:
        applied = {
            "a": cal.a,
            "b_ms": cal.b,
            "per_key": len(cal.per_key_ms),
            "fit_on": len((h.calibration or {}).get("fit_on") or []),
            "date": (h.calibration or {}).get("date"),
        }
    costs = SpaceCosts(per_layer, fixed, "ms", desc, applied)
    if applied is not None and costs.min_cost() <= 0:
        raise CostError(
            f"{source} carries a calibration, measured ≈ {cal.a:.4g}·sum {cal.b:+.4g} ms "
            f"(fitted by proxyless-validate on {applied['fit_on']} network(s)), that makes the "
            f"cheapest arch of this space cost {costs.min_cost():.4g} ms: no positive latency "
            "or target can be derived from it. Search on the raw table sums with "
            "hardware.calibrated=false, or remove the calibration from the table (set its "
            'header\'s "calibration" to null) and re-fit it with proxyless-validate on more '
            "networks"
        )
    return costs


FORCE_HINT = "profile a table with that setup, or pass hardware.force=true to use this one anyway"


def load_table(cfg: HardwareConfig) -> LatencyTable:
    if not cfg.table:
        raise CostError("hardware=lut needs hardware.table=<path to a latency table JSON>")
    try:
        return LatencyTable.load(
            Path(cfg.table).expanduser(),
            cfg.backend,
            cfg.device,
            force=cfg.force,
            fix=FORCE_HINT,
        )
    except TableError as e:
        raise CostError(str(e)) from e


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text).strip("-")[:60]


def cached_table_path(space: SearchSpace, cfg: HardwareConfig, device: str) -> Path:
    digest = hashlib.sha1(json.dumps(space.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    name = f"{space.name}-{digest}_{cfg.backend}_{_slug(device)}_b{cfg.batch}_t{cfg.threads}.json"
    return Path(cfg.cache_dir).expanduser() / name


def _set_aside_unanchored(path: Path) -> None:
    """A cached table profiled before tables carried a speed anchor (`latency.anchor`) is
    renamed to `*.unanchored.json` so that it is profiled again, with one: without it, every
    later measurement against the table carries the machine's drift since then (a quickstart
    read +79 % against such a table on a slow day). Renamed, not deleted."""
    if not path.is_file():
        return
    try:
        anchored = LatencyTable.load(path, force=True).header.anchor_ms is not None
    except TableError:
        return  # unreadable: the profiling step reports it
    if not anchored:
        aside = path.with_name(path.stem + ".unanchored.json")
        path.replace(aside)
        log.warning(
            "cached latency table %s has no speed anchor (profiled by an older version): "
            "profiling it again; the old one is kept as %s",
            path,
            aside.name,
        )


def _profiled_costs(space: SearchSpace, cfg: HardwareConfig) -> SpaceCosts:
    from latency.backends import get_backend

    if not cfg.backend:
        raise CostError("hardware=profile needs hardware.backend (e.g. torch-cpu, ort-cpu)")
    try:
        device = get_backend(cfg.backend, threads=cfg.threads).device_name()
        path = cached_table_path(space, cfg, device)
        _set_aside_unanchored(path)
        # The lead's bridge measures only keys missing from the cached table (resumable).
        table = bridge.profile_space_table(
            space,
            cfg.backend,
            path,
            batch=cfg.batch,
            threads=cfg.threads,
            command=bridge.profile_command(space, path, cfg.backend, cfg.threads, cfg.batch),
        )
    except (TableError, RuntimeError, KeyError) as e:
        raise CostError(f"profiling with backend {cfg.backend!r} failed: {e}") from e
    return _table_costs(space, table, path, f"profiled table {path}", cfg.calibrated)


def layer_costs(space: SearchSpace, cfg: HardwareConfig) -> SpaceCosts:
    """Costs of every candidate of `space` from the source `cfg` describes, in `cfg.unit`."""
    if cfg.kind in ("flops", "params"):
        space_json = json.dumps(space.to_dict(), sort_keys=True)
        costs = _fvcore_cached(space_json, cfg.kind)
    elif cfg.kind == "lut":
        table = load_table(cfg)
        costs = _table_costs(
            space, table, str(cfg.table), f"latency table {cfg.table}", cfg.calibrated
        )
    else:
        costs = _profiled_costs(space, cfg)
    return costs.scaled(cfg.scale, cfg.unit)  # type: ignore[arg-type]


def measured_latency(arch: Arch, cfg: HardwareConfig) -> float | None:
    """The derived network's end-to-end latency on this machine, in `cfg.unit`, measured on
    the table's backend, batch, threads and protocol; None for FLOPs/params costs or a
    table whose backend cannot run here (a phone's, or CUDA without a GPU)."""
    from latency.protocol import Protocol

    if cfg.kind == "lut":
        h = load_table(cfg).header
    elif cfg.kind == "profile":  # the profile cache's table: its protocol and speed anchor
        from latency.backends import get_backend

        device = get_backend(cfg.backend, threads=cfg.threads).device_name()
        path = cached_table_path(arch.space, cfg, device)
        if not path.is_file():
            return None  # nothing was profiled (the costs came from elsewhere)
        h = LatencyTable.load(path, force=True).header
    else:
        return None
    backend, batch, threads = h.backend, h.batch, h.threads
    protocol = Protocol.from_dict(h.protocol) if h.protocol else None
    anchor = h.anchor_ms
    if backend not in ("torch-cpu", "ort-cpu") and not torch.cuda.is_available():
        return None
    try:
        ms = bridge.measure_arch(arch, str(backend), batch, threads, protocol, anchor)
    except (KeyError, RuntimeError) as e:  # e.g. a backend name this machine lacks
        log.warning("could not measure the derived arch on %s: %s", backend, e)
        return None
    return ms * cfg.scale
