"""Files the program writes: atomic JSON and checkpoints, and the run's provenance.

Everything goes through temp file + rename, so a crash (or SIGKILL) mid-write leaves the
previous file intact. Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from latency.atomic import atomic_write_bytes as write_bytes_atomic


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes_atomic(path, buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not of the expected kind."""


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load with weights_only=True; `kind` checks the checkpoint's self-description."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise CheckpointError(f"checkpoint {path} cannot be read ({e}); it may be truncated") from e
    if kind is not None and (not isinstance(state, dict) or state.get("kind") != kind):
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is a {found!r} checkpoint, expected {kind!r}")
    return state


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def run_info() -> dict[str, Any]:
    """Versions and revision recorded beside every run's outputs."""
    import timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "git_revision": git_revision(),
    }
