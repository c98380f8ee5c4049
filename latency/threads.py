"""One way to change torch's intra-op thread count: for a block, and back afterwards.

Profiling inside a search, or a search inside a benchmark, must not leave the caller with a
different thread count than it had; `torch.set_num_threads` is process-global."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run the block with `n` intra-op threads (None or 0: leave as is); restore on exit.

    Yields the thread count in effect inside the block."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def free_cores() -> int:
    """CPU cores this process may use that are not already busy: the cores of its affinity
    mask minus the 1-minute load average (rounded), at least 1.

    A rough but cheap measure: on a shared 2-core box with another job running it gives 1,
    where torch's default (every core) makes tiny nets several times slower; on an idle
    16-core machine it gives 16. Where load or affinity are unknown it falls back to
    `os.cpu_count()`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, cores - round(load))


def resolve_threads(n: int | None) -> int:
    """`n` when given (>= 1), else `free_cores()`: the thread setting of every CLI."""
    if n is not None and n < 1:
        raise ValueError(f"threads={n} must be >= 1 (or null: the free cores)")
    return int(n) if n else free_cores()
