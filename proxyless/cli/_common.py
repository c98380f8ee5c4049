"""Shared helpers of the thin Hydra entry points: where the YAML lives, the resolved config,
and one-line errors with exit code 2.

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
