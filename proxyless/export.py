"""Export a trained (or randomly initialised) arch to ONNX, check it, and time it.

Steps: load the network (train checkpoint, or an arch.json alone with random weights for
latency checks); write `model.onnx` atomically; `onnx.checker`; compare onnxruntime's
output with torch's on a random input (fp32, CPU, max abs diff <= `parity_tol`); measure
the latency in onnxruntime and in torch (batch 1 by default) with the latency tables' own
protocol (`latency.protocol`), so the numbers compare with a table's; and, given a latency
table, put the table's prediction beside the measurements. Writes `export.json`.

>>> result = export(ExportConfig(arch="arch.json", out_dir="exp"))  # doctest: +SKIP
>>> result["parity"]["max_abs_diff"] <= 1e-4  # doctest: +SKIP
True
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from latency.atomic import atomic_write_bytes
from latency.backends import ort_session
from latency.config_dict import from_dict
from latency.onnx_export import INPUT_NAME, check_opset, export_onnx, onnx_opset

from .arch import Arch, resolve_arch
from .run import TRAIN_KIND, load_checkpoint, run_info, write_json

log = logging.getLogger(__name__)

OUTPUT_NAME = "logits"
FORMATS = ("onnx", "net_config")


class ExportError(RuntimeError):
    """Export failed or the exported model is wrong; the message says what to do."""


@dataclass
class ExportConfig:
    checkpoint: str | None = None  # a train checkpoint (last.pt / best.pt)
    arch: str | None = None  # or an arch alone (arch.json, net.config, preset): random weights
    weights: str = "auto"  # auto (EMA if the run kept one) | model | ema
    format: str = "onnx"  # onnx | net_config (the arch alone, for the original ProxylessNAS code)
    out_dir: str | None = None  # None: the checkpoint's folder, or beside the arch file
    name: str | None = None  # None: model.onnx, or net.config
    batch: int = 1
    image_size: int | None = None  # None: the arch's input size
    opset: int = 17
    dynamic_batch: bool = False
    parity_tol: float = 1e-4
    warmup: int = 10  # untimed calls before timing (latency.protocol.Protocol.warmup)
    repeats: int = 50  # least calls per timed window (Protocol.repeats)
    threads: int | None = None  # None: the table's threads if a table is given, else 1
    device: str = "cpu"  # torch timing device: cpu | cuda | auto (ORT follows it)
    table: str | None = None  # a latency table (JSON) to put its prediction beside
    force_table: bool = False  # use a table measured on another backend/device
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExportConfig:
        """Nested plain dict (e.g. a resolved Hydra config); unknown keys fail."""
        return from_dict(cls, d)


# --- loading ------------------------------------------------------------------------------------
def _check_source(cfg: ExportConfig) -> None:
    if (cfg.checkpoint is None) == (cfg.arch is None):
        raise ExportError(
            "give exactly one of checkpoint=<train checkpoint> or arch=<arch.json, net.config "
            "or preset name> (the latter exports random weights, for latency checks)"
        )


def load_arch(cfg: ExportConfig) -> Arch:
    """The arch of `cfg.arch` or of the train checkpoint, without building the network."""
    _check_source(cfg)
    if cfg.arch is not None:
        return resolve_arch(cfg.arch)
    return Arch.from_dict(load_checkpoint(cfg.checkpoint, kind=TRAIN_KIND)["arch"])  # type: ignore[arg-type]


def load_network(cfg: ExportConfig) -> tuple[Arch, nn.Module, dict[str, Any]]:
    """(arch, model in eval mode on CPU, where the weights came from)."""
    _check_source(cfg)
    if cfg.arch is not None:
        arch = resolve_arch(cfg.arch)
        torch.manual_seed(cfg.seed)
        model = calibrate_bn(arch.build(), arch.space.in_channels, arch.space.input_size)
        return arch, model.eval(), {"weights": "random", "arch": cfg.arch}
    if str(cfg.checkpoint).endswith(".json"):
        raise ExportError(
            f"checkpoint={cfg.checkpoint} looks like an arch file; pass it as arch=<arch.json> "
            "(random weights) or give a train checkpoint (last.pt / best.pt)"
        )
    state = load_checkpoint(cfg.checkpoint, kind=TRAIN_KIND)  # type: ignore[arg-type]
    arch = Arch.from_dict(state["arch"])
    model = arch.build()
    which = cfg.weights
    if which not in ("auto", "model", "ema"):
        raise ExportError(f"weights={which!r}: use auto, model or ema")
    if which == "auto":
        which = "ema" if state.get("ema") is not None else "model"
    if which == "ema":
        if state.get("ema") is None:
            raise ExportError(
                f"{cfg.checkpoint} holds no EMA weights (the run had ema.enabled=false); "
                "use weights=model"
            )
        prefix = "module."
        weights = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    else:
        weights = state["model"]
    model.load_state_dict(weights)
    source = {
        "weights": which,
        "checkpoint": cfg.checkpoint,
        "epoch": state["epoch"],
        "step": state["step"],
        "best": state["best"],
    }
    return arch, model.eval(), source


@torch.no_grad()
def calibrate_bn(model: nn.Module, channels: int, size: int, batches: int = 2) -> nn.Module:
    """Set BN running stats from random batches so random weights give input-dependent
    outputs: with default stats (mean 0, var 1) activations of a random net fade and every
    input gives the same logits, which would make the parity check vacuous."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    for _ in range(batches):
        model(torch.randn(8, channels, size, size))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


# --- ONNX ---------------------------------------------------------------------------------------
def to_onnx(model: nn.Module, example: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    """ONNX bytes, exported exactly as the latency tables' ORT entries are."""
    return export_onnx(
        model, example, opset=opset, dynamic_batch=dynamic_batch, output_name=OUTPUT_NAME
    )


def check_onnx(data: bytes) -> None:
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as e:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {e}") from e


def parity(model: nn.Module, data: bytes, inputs: list[torch.Tensor], tol: float) -> dict:
    """Max abs diff between torch (fp32, CPU) and onnxruntime (CPU) on random inputs."""
    sess = ort_session(data, threads=1)  # the CPU provider
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            want = model(x).numpy()
        got = sess.run(None, {INPUT_NAME: x.numpy()})[0]
        if got.shape != want.shape:
            raise ExportError(f"ONNX output shape {got.shape} != torch output shape {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    result = {"max_abs_diff": worst, "tol": tol, "batches": [len(x) for x in inputs]}
    if not worst <= tol:  # also catches NaN
        raise ExportError(
            f"onnxruntime and torch outputs differ by {worst:.3g} > parity_tol={tol:g}; the "
            "export is wrong for this model: try another opset (opset=18), or report the arch"
        )
    return result


# --- latency ------------------------------------------------------------------------------------
def measure(
    model: nn.Module,
    x: torch.Tensor,
    cfg: ExportConfig,
    threads: int,
    anchor: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """onnxruntime and torch latency of `model` on `x`, measured by `latency.protocol` on
    the backends a table would use (CUDA ones when `cfg.device` is a GPU). `anchor`: a
    table's (backend, anchor_ms): that backend's figure is rescaled to the table's machine
    speed (`latency.anchor`), so it compares with the table's prediction."""
    from latency.anchor import measure_anchored
    from latency.backends import get_backend
    from latency.protocol import Protocol, measure

    from .distributed import resolve_device

    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    protocol = Protocol(
        warmup=cfg.warmup, repeats=cfg.repeats, max_repeats=max(cfg.repeats, Protocol.max_repeats)
    )
    try:
        ort_name = "ort-cuda" if cuda else "ort-cpu"
        ort = get_backend(ort_name, threads=threads)
    except RuntimeError:  # no CUDA provider in this onnxruntime
        ort = get_backend("ort-cpu", threads=threads)
    if cuda:
        torch_backend = get_backend("torch-cuda", threads=threads, device=device.index or 0)
    else:
        torch_backend = get_backend("torch-cpu", threads=threads)
    try:
        out = {"threads": threads}
        for name, backend, where in (
            ("ort", ort, {"provider": ort.providers[0]}),
            ("torch", torch_backend, {"device": str(device)}),
        ):
            anchor_ms = anchor[1] if anchor and anchor[0] == backend.name else None
            entries, speed = measure_anchored(
                lambda b, *a, **k: measure(b, *a, **k).entries,
                {name: lambda: (model, x)},
                anchor_ms,
                backend,
                protocol,
                progress=False,
            )
            out[name] = {**asdict(entries[name]), **where}
            if speed is not None:  # > 1: this machine slower now than when the table was made
                out[name]["speed_vs_table"] = speed
    finally:
        model.cpu()
    return out


def table_prediction(arch: Arch, table_path: str, force: bool, batch: int) -> dict[str, Any]:
    """The latency table's prediction for `arch`, calibrated as the search's costs are
    (`proxyless.latency_bridge.arch_analysis`, the one predictor)."""
    from latency import LatencyTable, MissingKeyError, TableError

    from .latency_bridge import arch_analysis, profile_command

    table = LatencyTable.load(table_path, force=force)
    h = table.header
    try:
        h.require(
            {"batch": batch},
            force,
            source=f"latency table {table_path}",
            asked="the export",
            fix=f"pass batch={h.batch}, or force_table=true to compare anyway",
        )
    except TableError as e:
        raise ExportError(str(e)) from None
    analysis = arch_analysis(arch, table)
    if missing := analysis.missing_keys():  # the command adds them to this very table
        cmd = profile_command(arch.space, table_path, h.backend, h.threads, h.batch)
        raise MissingKeyError(missing, cmd)
    return {
        "path": table_path,
        "backend": h.backend,
        "device": h.device,
        "batch": h.batch,
        "threads": h.threads,
        "predicted_ms": analysis.total(),
        "calibrated": bool(h.calibration),
        "anchor_ms": h.anchor_ms,
    }


# --- the command --------------------------------------------------------------------------------
def export(cfg: ExportConfig) -> dict[str, Any]:
    """Export, check, time; returns the report also written to `out_dir/export.json`."""
    if cfg.format not in FORMATS:
        raise ExportError(f"format={cfg.format!r} is not supported; use one of {FORMATS}")
    if cfg.batch < 1:
        raise ExportError(f"batch={cfg.batch} must be >= 1")
    try:
        check_opset(cfg.opset)
    except ValueError as e:
        raise ExportError(str(e)) from None
    anchor = Path(cfg.checkpoint or cfg.arch or ".")
    out_dir = Path(cfg.out_dir) if cfg.out_dir else anchor.parent
    if cfg.format == "net_config":
        return export_net_config(load_arch(cfg), out_dir / (cfg.name or "net.config"))
    arch, model, source = load_network(cfg)
    onnx_path = out_dir / (cfg.name or "model.onnx")

    size = cfg.image_size or arch.space.input_size
    shape = (cfg.batch, arch.space.in_channels, size, size)
    gen = torch.Generator().manual_seed(cfg.seed)
    example = torch.randn(shape, generator=gen)

    data = to_onnx(model, example, cfg.opset, cfg.dynamic_batch)
    check_onnx(data)
    inputs = [example]
    if cfg.dynamic_batch:
        inputs.append(torch.randn((cfg.batch + 1, *shape[1:]), generator=gen))
    parity_result = parity(model, data, inputs, cfg.parity_tol)
    atomic_write_bytes(onnx_path, data)

    table = None
    threads = cfg.threads
    if cfg.table is not None:
        table = table_prediction(arch, cfg.table, cfg.force_table, cfg.batch)
        threads = threads or table["threads"]
    anchor = (table["backend"], table["anchor_ms"]) if table and table["anchor_ms"] else None
    latency = measure(model, example, cfg, threads or 1, anchor)
    stats = net_stats(model, example[:1])

    report = {
        "onnx": str(onnx_path),
        "onnx_bytes": len(data),
        "opset": onnx_opset(data),  # as written; cfg.opset (in "config") is what was asked
        "input_shape": list(shape),
        "dynamic_batch": cfg.dynamic_batch,
        "arch": arch.block_strings(),
        "params": stats["params"],
        "flops": {k: v for k, v in stats.items() if k != "params"},
        "source": source,
        "parity": parity_result,
        "latency": latency,
        "table": table,
        "config": asdict(cfg),
        "run_info": run_info(),
    }
    write_json(out_dir / "export.json", report)
    return report


def net_stats(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Parameters and FLOPs in both conventions found in papers and tools: the papers'
    conv+linear multiply-adds (ProxylessNAS, MobileNetV2) and fvcore's total, which also
    counts BatchNorm and pooling (one multiply-add = one flop in both)."""
    from latency.costs import conv_linear_macs, flops

    return {
        "params": sum(p.numel() for p in model.parameters()),
        "conv_linear_macs": conv_linear_macs(model, x),
        "fvcore_total": flops(model, x),
    }


def format_stats(stats: dict[str, Any]) -> str:
    """One line: params, conv+linear MACs (papers' FLOPs), fvcore's total."""
    return (
        f"params {stats['params'] / 1e6:.2f}M; FLOPs {stats['conv_linear_macs'] / 1e6:.1f}M "
        f"(conv+linear multiply-adds, the papers' convention), "
        f"{stats['fvcore_total'] / 1e6:.1f}M (fvcore total, + BatchNorm and pooling)"
    )


def export_net_config(arch: Arch, path: Path) -> dict[str, Any]:
    """Write `arch` as the original code's `net.config`; the report says what was written."""
    from .netconfig import save_net_config

    save_net_config(arch, path)
    x = torch.zeros(1, arch.space.in_channels, arch.space.input_size, arch.space.input_size)
    stats = net_stats(arch.build(), x)
    return {
        "net_config": str(path),
        "arch": arch.block_strings(),
        "params": stats["params"],
        "flops": {k: v for k, v in stats.items() if k != "params"},
    }


def format_report(report: dict[str, Any]) -> str:
    """A small table: where the ms come from, side by side."""
    stats = {"params": report["params"], **report["flops"]}
    if "net_config" in report:
        return f"{report['net_config']}: {len(report['arch'])} layers; {format_stats(stats)}"
    lat = report["latency"]
    rows = [
        ("onnxruntime", lat["ort"]["provider"], lat["ort"]),
        ("torch", lat["torch"]["device"], lat["torch"]),
    ]
    lines = [
        f"{report['onnx']}  ({report['onnx_bytes'] / 1e6:.2f} MB, opset {report['opset']}, "
        f"input {'x'.join(map(str, report['input_shape']))}, {lat['threads']} thread(s))",
        f"parity: max |onnx - torch| = {report['parity']['max_abs_diff']:.2e} "
        f"(tol {report['parity']['tol']:g})",
        format_stats(stats),
        # ms: the tables' statistic (low quantile of window minima); p10/p90: of single calls
        f"{'runtime':<14}{'where':<24}{'ms':>10}{'call p10':>9}{'call p90':>9}",
    ]
    for name, where, s in rows:
        lines.append(
            f"{name:<14}{where:<24}{s['ms']:>10.3f}{s['calls_p10_ms']:>9.3f}"
            f"{s['calls_p90_ms']:>9.3f}"
        )
    if report["table"] is not None:
        t = report["table"]
        where = f"{t['backend']} ({t['device']})"[:23]
        lines.append(f"{'table':<14}{where:<24}{t['predicted_ms']:>10.3f}{'':>9}{'':>9}")
        for name, _, s in rows:
            if "speed_vs_table" in s:
                lines.append(
                    f"({name} rescaled to the table's machine speed by its anchor: this machine "
                    f"runs at {1 / s['speed_vs_table']:.2f}x the table's speed now)"
                )
    return "\n".join(lines)
