"""What a search tells its user: TensorBoard scalars, a per-layer probability heatmap each
epoch, and the final summary table. Nothing here changes the search itself.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latency.atomic import atomic_write_bytes

from .arch import Arch
from .hardware import describe_calibration
from .supernet import SuperNet


def arch_entropy(net: SuperNet) -> float:
    """Mean over layers of the entropy of p, in nats (log N at start, 0 when decided)."""
    with torch.no_grad():
        ents = [float(-(p * p.clamp_min(1e-12).log()).sum()) for p in net.probabilities()]
    return sum(ents) / len(ents)


def heatmap_grid(net: SuperNet) -> tuple[list[str], torch.Tensor]:
    """Candidate names and the layers × candidates grid of p (NaN where a layer lacks one)."""
    names = [str(op) for op in max((ly.spec.candidates for ly in net.layers), key=len)]
    grid = torch.full((len(net.layers), len(names)), float("nan"))
    with torch.no_grad():
        for i, (layer, p) in enumerate(zip(net.layers, net.probabilities(), strict=True)):
            for op, prob in zip(layer.spec.candidates, p.tolist(), strict=True):
                grid[i, names.index(str(op))] = prob
    return names, grid


def heatmap_figure(names: list[str], grid: torch.Tensor, title: str = "") -> Any:
    """Layers × candidates, colour = probability. A bare `Figure` (no pyplot): no display
    needed, the process' matplotlib backend is left alone, and it can be drawn off the main
    thread."""
    from matplotlib.figure import Figure

    n_layers = grid.shape[0]
    fig = Figure(figsize=(1.0 + 0.7 * len(names), 0.8 + 0.35 * n_layers))
    ax = fig.subplots()
    im = ax.imshow(grid.numpy(), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n_layers), [str(i) for i in range(n_layers)], fontsize=7)
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


class Reporter:
    """TensorBoard writer (optional). `purge_step` drops events a killed run wrote past its
    last checkpoint, so a resumed run's curves have no duplicates.

    The epoch heatmap is drawn in a background thread while the next epoch runs (drawing
    is ~0.15 s, plus ~0.5 s for matplotlib's first import and fonts: a fifth of a quickstart
    search epoch); one drawing at a time, waited for by the next one and by `close`, which
    also raises any error it met."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        self.drawing: Future[None] | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def heatmap(self, step: int, net: SuperNet, title: str, png: Path | None = None) -> None:
        """The heatmap of p now into TensorBoard (if enabled) and, with `png`, into that file
        (atomically, replaced each epoch: the run directory shows the latest), drawn in the
        background."""
        if self.writer is None and png is None:
            return
        names, grid = heatmap_grid(net)  # p of this moment, before the next epoch moves it
        self.wait()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="heatmap")
        self.drawing = self.pool.submit(
            lambda: self._draw("arch/probabilities", step, heatmap_figure(names, grid, title), png)
        )

    def wait(self) -> None:
        """Until the heatmap being drawn is written; its error, if it met one."""
        if self.drawing is not None:
            drawing, self.drawing = self.drawing, None
            drawing.result()

    def figure(self, tag: str, step: int, fig: Any, png: Path | None = None) -> None:
        """A matplotlib figure as a TensorBoard image (if enabled) and, with `png`, into
        that file (atomically); after the heatmap being drawn (one figure at a time)."""
        self.wait()
        self._draw(tag, step, fig, png)

    def _draw(self, tag: str, step: int, fig: Any, png: Path | None = None) -> None:
        """Drawn once for both outputs (drawing is the slow part)."""
        if self.writer is None and png is None:
            return
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig.set_dpi(120)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba())
        if self.writer is not None:
            self.writer.add_image(tag, rgba[..., :3], step, dataformats="HWC")
        if png is not None:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(rgba).save(buf, format="png")
            atomic_write_bytes(png, buf.getvalue())

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self.pool is not None:
                self.pool.shutdown()
            if self.writer is not None:
                self.writer.flush()
                self.writer.close()


def summary_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the run's result (printed at the end, also in summary.json)."""
    unit = metrics["unit"]

    def num(v: float | None, fmt: str = ".4g") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    rows = [
        ("derived arch", " ".join(metrics["arch"])),
        ("derived as", metrics.get("derive", "argmax per layer")),
        ("expected cost E[cost]", f"{num(metrics['expected_cost'])} {unit}"),
        ("derived arch cost", f"{num(metrics['derived_cost'])} {unit}"),
        ("measured on this machine", f"{num(metrics.get('measured_latency'))} {unit}"),
        ("target", f"{num(metrics['target'])} {unit}"),
        ("cost range of space", f"{num(metrics['min_cost'])} … {num(metrics['max_cost'])} {unit}"),
        ("params (derived)", f"{num(metrics['params_m'], '.4f')} M"),
        (
            "FLOPs (derived)",
            f"{num(metrics['mflops'], '.3f')} M (fvcore total, MAC = 1, + BatchNorm and "
            f"pooling); {num(metrics.get('mmacs_conv_linear'), '.3f')} M conv+linear "
            "multiply-adds (the papers' convention)",
        ),
        ("test acc (supernet, derived path, BN re-estimated)", num(metrics["test_acc"], ".4f")),
        ("steps / epochs", f"{metrics['steps']} / {metrics['epochs']}"),
        ("peak memory", f"{num(metrics.get('peak_mem_mb'), '.0f')} MiB"),
        ("cost source", metrics["cost_source"]),
        ("latency calibration", describe_calibration(metrics.get("calibration"))),
        ("run dir", metrics["run_dir"]),
    ]
    if metrics.get("strategy") == "zeroshot":
        rows = _zeroshot_rows(metrics, rows, num)
    if metrics.get("gm"):
        rows[1:1] = gm_rows(metrics["gm"], unit, num)
    for k, c in enumerate(metrics.get("derive_candidates") or []):  # derive.candidates > 1
        mark = "  ← chosen" if c.get("chosen") else ""
        rows.insert(
            2 + k,
            (f"candidate {k + 1}", f"{' '.join(c['arch'])}: {num(c['cost'])} {unit}, log p "
             f"{c['log_prob']:.3f}, held-out acc {num(c['heldout_acc'], '.4f')}{mark}"),
        )  # fmt: skip
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 2 + max(len(v) for _, v in rows))
    body = "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    return f"{line}\n{body}\n{line}"


def gm_rows(gm: dict[str, Any], unit: str, num: Any) -> list[tuple[str, str]]:
    """The split tree (one row per split) and the leaves GM chose among."""
    rows = []
    for t in gm["tree"]:
        groups = " | ".join(" ".join(g) for g in t["groups"])
        rows.append(
            (f"gm split of {t['node']} (epoch {t['epoch']})",
             f"layer {t['layer']} → {groups} (score {t['score']:.4f}) → {', '.join(t['children'])}")
        )  # fmt: skip
    for leaf in gm["leaves"]:
        mark = "  ← chosen" if leaf["id"] == gm["chosen"] else ""
        rows.append(
            (f"gm leaf {leaf['id']}",
             f"{num(leaf['cost'])} {unit}, held-out acc {num(leaf['heldout_acc'], '.4f')}{mark}")
        )  # fmt: skip
    return rows


def _zeroshot_rows(metrics: dict[str, Any], rows: list[tuple[str, str]], num: Any) -> list:
    """A zero-shot search has no α (no E[cost]), no trained weights (no accuracy), no
    epochs: those rows give way to the proxy score and the candidate counts."""
    drop = ("expected cost E[cost]", "test acc (supernet, derived path)", "steps / epochs")
    out = [r for r in rows if r[0] not in drop]
    used = metrics.get("budget_used")
    out.insert(1, (f"proxy score ({metrics['proxy']})", num(metrics["score"])))
    out.insert(4, ("share of the budget used", "-" if used is None else f"{used:.1%}"))
    out.insert(
        -3,
        (
            "candidates scored",
            f"{metrics['candidates']} ({metrics['rejected_over_budget']} over budget rejected "
            f"before scoring, {metrics['duplicates']} repeats skipped)",
        ),
    )
    return out


def derived_stats(arch: Arch) -> tuple[float, float, float]:
    """Params (M), fvcore's FLOPs (M; counts BatchNorm and pooling too) and the papers'
    conv+linear multiply-adds (M) of the derived network."""
    from latency.costs import conv_linear_macs, flops, params

    model = arch.build().eval()
    s = arch.space
    x = torch.zeros(1, s.in_channels, s.input_size, s.input_size)
    return params(model) / 1e6, flops(model, x) / 1e6, conv_linear_macs(model, x) / 1e6


def epoch_stats(
    net: SuperNet,
    epoch: int,
    warm: bool,
    sums: dict[str, float],
    target: float | None,
    tolerance: float | None,
) -> dict[str, Any]:
    n = max(int(sums["n"]), 1)
    with torch.no_grad():
        expected = float(net.expected_cost())
    return {
        "epoch": epoch,
        "phase": "warmup" if warm else "search",
        "train_loss": sums["loss"] / n,
        "train_acc": sums["acc"] / n,
        "expected_cost": expected,
        "derived_cost": net.derived_cost(target, tolerance),
        "target": target,
        "entropy": arch_entropy(net),
    }


def epoch_scalars(stats: dict[str, Any]) -> dict[str, float]:
    out = {
        "epoch/train_loss": stats["train_loss"],
        "epoch/train_acc": stats["train_acc"],
        "cost/expected": stats["expected_cost"],
        "cost/derived": stats["derived_cost"],
        "arch/entropy": stats["entropy"],
    }
    if stats.get("heldout_acc") is not None:
        out["epoch/heldout_acc"] = stats["heldout_acc"]
    if stats["target"] is not None:
        out["cost/target"] = stats["target"]
    return out
