"""`proxyless-validate`: does a latency table predict whole networks? (thin Hydra app)

    proxyless-validate space=imagenet table=tables/imagenet_ort-cpu.json n_archs=300 calibrate=0.1

Samples `n_archs` architectures, predicts each with the table (sum of its keys), measures
each whole network on the table's backend with the table's protocol (twice, for the noise
floor), fits a calibration (`calibration_model`: per-key corrections over key counts, or
`a·sum + b`) on a `calibrate` fraction and scores it on the others.
The networks are streamed (`stream=true`): each is built and saved once into a temporary
folder in the run directory and measured from it in chunks of `stream_live` (default 8),
so the memory is that of `stream_live` + 1 networks whatever `n_archs` is (a phone-class
board can validate 300).
Writes validation.json + validation.png into the run directory, saves the calibration into
the table header (atomically) if it was fitted on enough networks (`MIN_FIT_NETWORKS`) and
beats the raw sum on the others (else says why not), and prints the figures.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from latency.errors import MissingKeyError
from proxyless.cli._common import (
    check_overrides,
    config_dir,
    exit_on_user_error,
    set_cli_threads,
)
from proxyless.cli.profile import (
    CLIError,
    hydra_command,
    make_backend,
    make_protocol,
    make_space,
    protocol_overrides,
    space_option_cmd,
)

PROG = "proxyless-validate"


def load_table(cfg: DictConfig) -> tuple[Any, Any]:
    """(table, backend): the table, checked against the backend/device/threads asked for
    (those not asked for default to the table's)."""
    from latency.table import LatencyTable

    path = Path(cfg.table)
    if not path.is_file():
        raise CLIError(
            f"latency table {str(path)!r} not found; build it first: proxyless-profile "
            f"{space_option_cmd(cfg)} backend=<backend> out={path}"
        )
    table = LatencyTable.load(path)
    h = table.header
    name = cfg.backend or h.backend
    if name == "ort-mobile" and not cfg.backend:
        raise CLIError(
            f"{path} was measured on a device ({h.device!r}) with latency_runner.py; whole "
            "networks cannot be measured from here: validate on that device, or pass backend="
        )
    backend = make_backend(name, int(cfg.threads or h.threads))
    h.require(
        {"backend": name, "device": backend.device_name(), "threads": backend.threads},
        bool(cfg.force),
        source=f"latency table {str(path)!r}",
        fix="validate with the table's setup, or pass force=true to validate anyway",
    )
    return table, backend


def run(cfg: DictConfig, out_dir: str | Path, command: str = PROG) -> dict[str, Any]:
    """The whole app on a composed config; returns the summary (also written to out_dir)."""
    import torch

    from latency.atomic import atomic_write_json
    from latency.calibrate import MODELS
    from latency.table import LatencyTable
    from latency.validate import validate
    from proxyless.latency_bridge import arch_network, profile_command, sample_archs
    from proxyless.run import peak_memory_mb

    if not 0.0 <= float(cfg.calibrate) < 1.0:
        raise CLIError(f"calibrate must be a fraction in [0, 1), got {cfg.calibrate}")
    if cfg.calibration_model not in MODELS:
        raise CLIError(
            f"calibration_model={cfg.calibration_model} is unknown; use one of: "
            + ", ".join(f"calibration_model={m}" for m in MODELS)
        )
    if int(cfg.n_archs) < 2:
        raise CLIError(f"n_archs must be >= 2, got {cfg.n_archs}")
    if int(cfg.stream_live) < 1:
        raise CLIError(
            f"stream_live must be >= 1 (networks loaded at once), got {cfg.stream_live}; "
            "for every network live at once use stream=false"
        )
    space = make_space(cfg)
    table, backend = load_table(cfg)
    protocol = make_protocol(protocol_overrides(cfg.protocol), table.header.protocol)
    archs = sample_archs(space, int(cfg.n_archs), seed=int(cfg.seed))
    nets = [arch_network(a, f"arch{i:04d}", table.header.batch) for i, a in enumerate(archs)]
    if missing := table.missing(k for n in nets for k in n.keys):
        h = table.header  # the command adds the space's missing keys to the user's table
        raise MissingKeyError(
            missing, profile_command(space, cfg.table, h.backend, h.threads, h.batch)
        )
    print(
        f"{PROG}: {len(nets)} {cfg.space.name} networks (batch {table.header.batch}) on "
        f"{backend.name} ({backend.threads} thread(s)) against {cfg.table}",
        flush=True,
    )
    if note := too_few_to_fit(len(nets), float(cfg.calibrate)):
        print(f"  note: {note}", flush=True)
    t0 = time.perf_counter()
    summary = validate(
        table,
        nets,
        backend,
        protocol,
        calibrate_on=float(cfg.calibrate),
        noise_floor=bool(cfg.noise_floor),
        out_dir=out_dir,
        force=bool(cfg.force),
        progress=cfg.progress if cfg.progress is not None else False,
        seed=int(cfg.seed),
        stream=bool(cfg.stream),
        stream_live=int(cfg.stream_live),
        model=str(cfg.calibration_model),
    )
    secs = time.perf_counter() - t0
    summary = {
        **{k: v for k, v in summary.items() if k != "networks"},
        "space": cfg.space.name,
        "table": str(cfg.table),
        "threads": backend.threads,
        "batch": table.header.batch,
        "protocol": (protocol or _default_protocol()).to_dict(),
        "seconds": round(secs, 1),
        # this process' peak resident memory, whole run (saver processes have their own)
        "peak_rss_mib": round(peak_memory_mb(torch.device("cpu")), 1),
        "command": command,
        "networks": summary["networks"],
    }
    atomic_write_json(Path(out_dir) / "validation.json", summary)
    saved = False
    if cfg.save_calibration and summary.get("calibrated", {}).get("accepted"):
        # Re-read so that keys profiled meanwhile are kept; save() is atomic.
        fresh = LatencyTable.load(cfg.table, force=True)
        fresh.header.calibration = {
            **table.header.calibration,
            "validation": str(Path(out_dir) / "validation.json"),
        }
        fresh.save(cfg.table)
        saved = True
    report(summary, out_dir, saved)
    return summary


def too_few_to_fit(n_archs: int, calibrate: float) -> str | None:
    """Said before measuring: this split cannot give a fit worth keeping."""
    from latency.validate import MIN_FIT_NETWORKS, split_for_calibration

    if calibrate <= 0:
        return None
    n_fit = len(split_for_calibration([str(i) for i in range(n_archs)], calibrate))
    if n_fit >= MIN_FIT_NETWORKS:
        return None
    need = math.ceil(MIN_FIT_NETWORKS / calibrate)
    return (
        f"calibrate={calibrate:g} of n_archs={n_archs} fits on {n_fit} network(s), fewer than "
        f"{MIN_FIT_NETWORKS}: the fit will be reported but not saved; for one that can be "
        f"saved use n_archs>={need} (or a larger calibrate)"
    )


def _default_protocol() -> Any:
    from latency.protocol import Protocol

    return Protocol()


def _line(name: str, m: dict[str, Any]) -> str:
    return (
        f"  {name:<12s} n={m['n']:<4d} within ±10%: {100 * m['within_10pct']:5.1f}%   "
        f"within ±5%: {100 * m['within_5pct']:5.1f}%   Spearman {m['spearman']:.3f}   "
        f"MAPE {m['mape']:.2f}%"
    )


def report(summary: dict[str, Any], out_dir: str | Path, saved: bool) -> None:
    print(
        f"{PROG}: {summary['backend']} on {summary['device']} ({summary['seconds']} s, "
        f"peak memory {summary['peak_rss_mib']:.0f} MiB)"
    )
    if speed := summary.get("speed_vs_table"):
        print(
            "  machine speed vs the table's: "
            + ", ".join(f"{1 / x:.2f}x" for x in speed)
            + " (per pass, by the speed anchor; measurements rescaled to the table's speed)"
        )
    print(_line("raw sum", summary))
    if cal := summary.get("calibrated"):
        print(_line("raw, scored", cal["raw_same_networks"]))
        fit = f"a={cal['a']:.4f}, b={cal['b']:.3f} ms"
        if cal.get("per_key_corrections"):
            fit += f", {cal['per_key_corrections']} per-key corrections, λ={cal['lambda']}"
        print(_line("calibrated", cal) + f"   ({cal.get('model', 'linear')}: {fit})")
        if line := cal.get("linear_same_networks"):
            print(_line("linear only", line) + "   (a·sum + b alone, same networks)")
    if noise := summary.get("noise_floor"):
        print(_line("noise floor", noise) + "   (same networks measured twice)")
    out = Path(out_dir)
    print(f"  summary: {out / 'validation.json'}  plot: {out / 'validation.png'}")
    if saved:
        print(f"  calibration saved into {summary['table']}")
    elif (cal := summary.get("calibrated")) and cal.get("refused"):
        print(f"  calibration NOT saved into {summary['table']}: {cal['refused']}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="validate")
@exit_on_user_error(PROG)
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    set_cli_threads()  # the backend measures with the table's threads while it times
    run(cfg, HydraConfig.get().runtime.output_dir, hydra_command(PROG))


def main() -> None:
    check_overrides(PROG, "validate", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
