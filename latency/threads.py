"""One way to change torch's intra-op thread count: for a block, and back afterwards.

Profiling inside a search, or a search inside a benchmark, must not leave the caller with a
different thread count than it had; `torch.set_num_threads` is process-global."""

from __future__ import annotations

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
