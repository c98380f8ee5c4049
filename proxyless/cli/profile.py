"""`proxyless-profile`: build or extend a latency table of a search space (thin Hydra app).

    proxyless-profile space=imagenet backend=ort-cpu out=tables/imagenet_ort-cpu.json
    proxyless-profile mode=bundle space=imagenet out=bundle/          # for a phone / board
    proxyless-profile mode=import space=imagenet results=results.json out=tables/phone.json
    proxyless-profile mode=import space=imagenet results=mobile_trim.yaml out=tables/pixel1.json

The last line imports the ProxylessNAS paper's own mobile table (Pixel 1, TFLite): a
`.yaml`/`.yml` results file is read as that table (`proxyless.paper_table`).

Profiling is resumable: re-running the same command measures only the keys still missing.
The exact command line goes into the table header, so a missing-key error names it. The
helpers here (config location, one-line errors, protocol overrides) are shared with
`proxyless-validate`; the work itself is done by `proxyless.latency_bridge` and `latency`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from latency.protocol import Protocol
from proxyless.cli._common import (
    check_overrides,
    config_dir,
    exit_on_user_error,
    set_cli_threads,
)

PROG = "proxyless-profile"


class CLIError(ValueError):
    """A user error: printed as one line by `_common.exit_on_user_error`, exit code 2."""


def hydra_command(prog: str) -> str:
    """`prog` + the overrides of this run, shell-quoted (inside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    return " ".join([prog, *(shlex.quote(o) for o in HydraConfig.get().overrides.task)])


def make_space(cfg: DictConfig) -> Any:
    """The search space of a config: group `space` (name, width_mult, overrides) plus the
    top-level `resolution` / `num_classes` overrides, which must match the search's data."""
    from proxyless.space import get_space

    sp = cfg.space
    over: dict[str, Any] = dict(sp.get("overrides") or {})
    if sp.get("width_mult") is not None:
        over["width_mult"] = float(sp.width_mult)
    if cfg.get("resolution"):
        over["input_size"] = int(cfg.resolution)
    if cfg.get("num_classes"):
        over["num_classes"] = int(cfg.num_classes)
    try:
        return get_space(str(sp.name), **over)
    except ValueError as e:
        raise CLIError(str(e)) from None


def space_option_cmd(cfg: DictConfig) -> str:
    """The space options of a command line, to repeat them in hints."""
    parts = [f"space={cfg.space.name}"]
    parts += [f"{k}={cfg[k]}" for k in ("resolution", "num_classes") if cfg.get(k)]
    return " ".join(parts)


def make_backend(name: str, threads: int) -> Any:
    """A backend, or a CLIError naming the choices / why it cannot run here."""
    from latency.backends import get_backend

    try:
        return get_backend(name, threads=int(threads))
    except KeyError as e:
        raise CLIError(f"unknown backend {name!r}: {e.args[0]}") from None
    except (RuntimeError, ImportError) as e:
        raise CLIError(str(e)) from None


def protocol_overrides(cfg: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """The protocol fields set (non-null) in the config; unknown fields are an error."""
    if cfg is None:
        return {}
    data = OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(data, dict)
    known = set(Protocol.__dataclass_fields__)
    if unknown := sorted(set(data) - known):
        raise CLIError(f"unknown protocol field(s) {unknown}; known: {sorted(known)}")
    return {k: v for k, v in data.items() if v is not None}


def make_protocol(overrides: Mapping[str, Any], base: Mapping[str, Any] | None) -> Protocol | None:
    """`base` (a table's protocol) updated by `overrides`; None when neither says anything."""
    if not overrides and not base:
        return None
    return Protocol.from_dict({**(base or {}), **overrides})


def _profile(cfg: DictConfig, command: str) -> dict[str, Any]:
    from latency.table import LatencyTable
    from proxyless.latency_bridge import profile_space_table, space_keys

    space = make_space(cfg)
    backend = make_backend(cfg.backend, cfg.threads)
    out = Path(cfg.out)
    before = LatencyTable.load(out, force=True) if out.is_file() else None
    over = protocol_overrides(cfg.protocol)
    base = before.header.protocol if before is not None else None
    protocol = make_protocol(over, base) if over else None
    n_keys = len(space_keys(space))
    todo = n_keys if before is None else len(before.missing(str(k) for k in space_keys(space)))
    print(
        f"{PROG}: {cfg.space.name} space ({n_keys} keys, input {space.input_size}, batch "
        f"{cfg.batch}) on {backend.name} ({cfg.threads} thread(s), {backend.device_name()}): "
        f"{todo} key(s) to measure -> {out}",
        flush=True,
    )
    t0 = time.perf_counter()
    table = profile_space_table(
        space,
        backend.name,
        out,
        batch=int(cfg.batch),
        threads=int(cfg.threads),
        protocol=protocol,
        progress=cfg.progress,
        command=command,
        force=bool(cfg.force),
    )
    secs = time.perf_counter() - t0
    summary = {
        "table": str(out),
        "measured": todo,
        "keys": len(table),
        "seconds": round(secs, 1),
        "backend": table.header.backend,
        "device": table.header.device,
    }
    print(f"{PROG}: measured {todo} key(s) in {secs:.1f} s; table has {len(table)} key(s): {out}")
    return summary


def runner_path() -> Path | None:
    """scripts/latency_runner.py of this checkout, if there is one."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "latency_runner.py"
    return path if path.is_file() else None


def _bundle(cfg: DictConfig, command: str) -> dict[str, Any]:
    from latency.bundle import write_bundle
    from proxyless.latency_bridge import space_items

    space = make_space(cfg)
    folder = Path(cfg.out)
    over = protocol_overrides(cfg.protocol)
    t0 = time.perf_counter()
    items = space_items(space, int(cfg.batch))
    manifest = write_bundle(items, folder, int(cfg.batch), protocol=make_protocol(over, None))
    runner = runner_path()
    if runner is not None:  # the folder alone is enough on the device
        shutil.copy2(runner, folder / "latency_runner.py")
    secs = time.perf_counter() - t0
    run = f"python latency_runner.py {shlex.quote(str(folder))} --out results.json --threads 1"
    print(f"{PROG}: bundle of {len(items)} models in {secs:.1f} s: {manifest}")
    if runner is not None:
        print("copy the folder to the device (it holds latency_runner.py) and run there:")
    else:  # installed without the repository: scripts/ is not part of the package
        print("copy the folder and scripts/latency_runner.py (from the proxyless repository,")
        print("it needs only onnxruntime and numpy) to the device and run there:")
    print(f"  {run}")
    print("then copy results.json back and import it:")
    print(
        f"  {PROG} mode=import {space_option_cmd(cfg)} results=results.json "
        "out=<table.json> device=<device name>"
    )
    return {"bundle": str(folder), "manifest": str(manifest), "keys": len(items), "run": run}


def _import(cfg: DictConfig, command: str) -> dict[str, Any]:
    from latency.bundle import import_results
    from latency.table import LatencyTable
    from proxyless.latency_bridge import space_keys
    from proxyless.paper_table import import_paper_table

    if not cfg.results:
        raise CLIError(
            "mode=import needs results=<results.json> (written by latency_runner.py) or "
            "results=<mobile_trim.yaml> (the ProxylessNAS paper's table)"
        )
    space = make_space(cfg)
    if Path(cfg.results).suffix in (".yaml", ".yml"):  # the paper's table, not a bundle's
        table = import_paper_table(cfg.results, **({"device": cfg.device} if cfg.device else {}))
    else:
        remeasure = (
            f"{PROG} mode=bundle {space_option_cmd(cfg)} batch={cfg.batch} out=<bundle>, then "
            f"python latency_runner.py <bundle> --out results.json --threads 1 on the device, "
            f"then {command}"
        )
        fields: dict[str, Any] = {"profile_command": remeasure}
        if cfg.device:
            fields["device"] = str(cfg.device)
        table = import_results(cfg.results, fields)
    known = {str(k) for k in space_keys(space)}
    foreign = [k for k in table.entries if k not in known]
    # Extra keys beside a covered space are harmless (the paper's table times first blocks
    # the space does not have); beside missing ones they mean the wrong space was given.
    if foreign and not cfg.force and table.missing(known):
        raise CLIError(
            f"{cfg.results} holds {len(foreign)} key(s) that the {cfg.space.name} space "
            f"(input {space.input_size}) does not have, e.g. {foreign[0]!r}; pass the space "
            "(and resolution) the bundle was made for, or force=true"
        )
    out = Path(cfg.out)
    if out.is_file():  # resumable: add to the table already there (same device etc.)
        table = LatencyTable.load(out).merge(table)
    table.save(out)
    missing = len([k for k in known if k not in table])
    print(
        f"{PROG}: imported {len(table)} key(s) measured on {table.header.device!r} -> {out}"
        + (f" ({missing} key(s) of the space still missing)" if missing else "")
        + (f" ({len(foreign)} key(s) outside the space kept)" if foreign else "")
    )
    return {"table": str(out), "keys": len(table), "missing": missing, "foreign": len(foreign)}


MODES = {"profile": _profile, "bundle": _bundle, "import": _import}


def run(cfg: DictConfig, command: str = PROG) -> dict[str, Any]:
    """The whole app on a composed config (plain function: testable without Hydra's main)."""
    if cfg.mode not in MODES:
        raise CLIError(f"unknown mode {cfg.mode!r}; choose one of {sorted(MODES)}")
    return MODES[cfg.mode](cfg, command)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="profile")
@exit_on_user_error(PROG)
def _hydra_main(cfg: DictConfig) -> None:
    set_cli_threads()  # the backend measures with `threads` while it times
    run(cfg, hydra_command(PROG))


def main() -> None:
    check_overrides(PROG, "profile", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
