"""Device names and software versions for table headers: tables from different machines
must not be mixed, so the header has to say precisely where a table was measured."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def gpu_name(index: int = 0) -> str:
    """CUDA device name via torch (the only portable way without extra packages)."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is visible; use a CPU backend or run on a GPU machine")
    return torch.cuda.get_device_name(index)


def package_versions(*names: str) -> dict[str, str]:
    """Versions of python and the given distributions (missing ones are skipped)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
