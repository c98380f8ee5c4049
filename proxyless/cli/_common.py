"""Shared helpers of the thin Hydra entry points: where the YAML lives, the resolved config,
overrides checked before Hydra sees them, the thread count, and one-line errors with exit
code 2.

Hydra lives only in `proxyless/cli/`; the library takes plain dataclasses.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from latency.errors import MissingKeyError, TableError

from ..arch import ArchError
from ..run import CheckpointError

# The configs ship inside the package (package data); the repo's top-level `configs` is a
# symlink to this folder, so editable and non-editable installs read the same files.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def config_dir() -> str:
    """Absolute path of the packaged configs (works from any cwd, installed or not)."""
    return CONFIG_DIR


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says what is wrong and how to fix it: shown without traceback.

    ValueError covers DataError, CostError, ConfigError, ObjectiveError, ArchError,
    CheckpointError and TableError; KeyError the registries' "no 'x' in estimators".
    """
    from ..distributed import DistributedError
    from ..export import ExportError
    from ..search import SearchError
    from ..train import TrainError

    return (
        DistributedError,
        ExportError,
        TrainError,
        ValueError,
        KeyError,
        MissingKeyError,
        TableError,
        ArchError,
        CheckpointError,
        SearchError,
        FileNotFoundError,
        OmegaConfBaseException,
    )


def fail(prog: str, message: str, code: int = 2) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def _message(e: BaseException) -> str:
    if isinstance(e, MissingKeyError):
        return e.message
    if isinstance(e, MissingMandatoryValue):
        return f"missing value for {e.full_key}: pass {e.full_key}=<value>"
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "Original Traceback" in text:  # raised in a DataLoader worker: its last line says it
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())  # one line


def exit_on_user_error(prog: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: user errors → one `prog: error: ...` line on stderr and exit code 2;
    Ctrl-C → exit 130 with a hint. Hydra lets SystemExit through untouched.
    HYDRA_FULL_ERROR=1 re-raises instead (full traceback, as Hydra does for its own errors)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                fail(prog, "interrupted; continue with resume=true in the same run dir", 130)
            except user_errors() as e:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                fail(prog, _message(e))

        return run

    return wrap


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config without Hydra's node; `???` values raise MissingMandatoryValue."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    return plain  # type: ignore[return-value]


def hydra_run_dir() -> str | None:
    """Hydra's output dir of this run, or None outside @hydra.main (Compose API, tests)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return str(HydraConfig.get().runtime.output_dir)


def set_cli_threads(n: int | None = None) -> int:
    """torch's intra-op threads for the whole command: `n`, else the free cores
    (`latency.threads.free_cores`). Latency measurements set their own count while they
    time, so this never changes what a table or an export measures."""
    import torch

    from latency.threads import resolve_threads

    n = resolve_threads(n)
    torch.set_num_threads(n)
    return n


# --- overrides, checked before Hydra composes ------------------------------------------------
def check_overrides(prog: str, config_name: str, argv: list[str]) -> None:
    """Compose `config_name` with the command line's overrides as Hydra will, and turn
    what would fail (an unknown key, an unknown group option, a value of the wrong type,
    a syntax error) into one `prog: error: ...` line naming the key and what it accepts,
    exit code 2. Hydra's own report is several lines, exit code 1.

    Command lines with flags (--multirun, --cfg, --help, ...) are left to Hydra."""
    if any(a.startswith("-") for a in argv):
        return
    message = override_error(config_name, argv)
    if message is not None:
        fail(prog, message)


def override_error(config_name: str, argv: list[str]) -> str | None:
    """The one-line message for what is wrong with `argv`'s overrides, or None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except OverrideParseException as e:
        return f"cannot parse override {e.override!r}: {e.message.splitlines()[0]}"
    groups = [o for o in parsed if _is_group(o.key_or_group) and not o.is_delete()]
    base = None
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            base = compose(config_name, overrides=[o.input_line for o in groups])
            compose(config_name, overrides=list(argv))
    except MissingConfigException as e:
        group = (e.missing_cfg_file or "").rsplit("/", 1)[0]
        wrong = next((o for o in parsed if o.key_or_group == group), None)
        value = wrong.value() if wrong is not None else e.missing_cfg_file
        options = list(e.options or [])
        if group and options:
            return (
                f"{group}={value}: no such option; {group} is one of {', '.join(options)} "
                f"(e.g. {group}={options[0]})"
            )
        return " ".join(str(e).splitlines()[0].split())
    except ConfigCompositionException as e:
        return _composition_message(e, parsed, base)
    for o in parsed:
        if o.key_or_group.startswith("hydra") or o.is_delete() or _is_group(o.key_or_group):
            continue
        if (problem := _type_problem(base, o.key_or_group, o.value())) is not None:
            return problem
    return None


def _is_group(name: str) -> bool:
    return "." not in name and (Path(config_dir()) / name).is_dir()


def _composition_message(e: Exception, parsed: list[Any], base: Any) -> str:
    from omegaconf import OmegaConf

    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if first.startswith("Could not override '"):
        key = first[len("Could not override '") :].split("'", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(base, parent) if (base is not None and parent) else base
        value = next((o.value() for o in parsed if o.key_or_group == key), "...")
        known = ""
        if node is not None and OmegaConf.is_dict(node):
            names = [k for k in node if k != "hydra"]
            where = f"{parent}." if parent else ""
            known = f"; known keys: {', '.join(where + str(k) for k in names)}"
        return f"unknown config key {key}={value}{known}"
    return " ".join(first.split())


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_problem(base: Any, key: str, value: Any) -> str | None:
    """A value whose type cannot be what the key's default is (an int key given 'abc')."""
    from omegaconf import OmegaConf

    try:
        default = OmegaConf.select(base, key, throw_on_missing=False)
    except Exception:  # an interpolation that needs more than the base config
        return None
    if default is None or value is None or OmegaConf.is_config(default):
        return None
    kind = type(default)
    if kind not in _KINDS or kind is str:
        return None
    ok = (
        isinstance(value, bool)
        if kind is bool
        else (
            isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
    )
    if ok:
        return None
    return f"{key}={value!r}: expected {_KINDS[kind]} (default {key}={_show(default)})"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def composed_for_resume(config_name: str, argv: list[str]) -> tuple[dict[str, Any], str] | None:
    """(resolved config without Hydra's node, Hydra's run dir) when the command line asks
    for resume=true and composes; else None. Lets a CLI see a finished run before Hydra
    writes its .hydra/ files and log into that run's directory."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import open_dict

    if any(a.startswith("-") for a in argv):
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(argv)
        if not any(o.key_or_group == "resume" and o.value() is True for o in parsed):
            return None
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name, overrides=list(argv), return_hydra_config=True)
        run_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))
        with open_dict(cfg):
            del cfg["hydra"]
        return to_plain(cfg), run_dir
    except Exception:  # anything wrong is reported by the run itself
        return None
