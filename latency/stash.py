"""Items saved to disk once and loaded back one at a time, so that measuring many whole
networks needs the memory of a few networks, not of all of them (issue 12: 300 ImageNet-space
networks held 13 GiB live; a phone-class board has 4-8 GiB).

What an item is saved as is the backend's business (`Backend.save` / `Backend.load`): the
ONNX file for ONNX Runtime (exported once, the slow part), weights and input for torch.

>>> import torch
>>> from latency.backends import get_backend
>>> with Stash(get_backend("torch-cpu")) as stash:
...     stash.add_all({"lin": lambda: (torch.nn.Linear(4, 2), torch.zeros(1, 4))})
...     tuple(stash.load("lin")().shape)
(1, 2)
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency.backends import Backend, Run

Builder = Callable[[], tuple[nn.Module, torch.Tensor]]


LIVE = 8  # items a streamed measurement keeps loaded by default (ImageNet on ORT: ~42 MiB each)
_JOBS: list[tuple[Backend, Builder, Path]] = []  # what forked savers inherit


def _save(backend: Backend, build: Builder, stem: Path) -> None:
    module, x = build()
    backend.save(module, x, stem)
    del module, x
    gc.collect()


def _save_job(i: int) -> None:
    _save(*_JOBS[i])


def _one_thread() -> None:
    torch.set_num_threads(1)  # one core per saver; OpenMP pools do not survive fork anyway


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


class Stash:
    """A folder of saved items for one backend: `add_all` builds and saves items once,
    `load` makes a fresh run of one. Without `folder`, a temporary one (inside `parent` if
    given) that `close` (or leaving a `with` block) deletes; a given `folder` is kept.
    `live`: how many items a measurement keeps loaded at once (`latency.protocol.measure`
    measures them in chunks of that size), the memory/time trade-off of streaming."""

    def __init__(
        self,
        backend: Backend,
        folder: str | os.PathLike[str] | None = None,
        parent: str | os.PathLike[str] | None = None,
        live: int = LIVE,
    ) -> None:
        if int(live) < 1:
            raise ValueError(f"a stash must keep at least one item live, got live={live}")
        self.backend = backend
        self.live = int(live)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if folder is None:
            if parent is not None:
                Path(parent).mkdir(parents=True, exist_ok=True)
            self._tmp = tempfile.TemporaryDirectory(prefix=".stash-", dir=parent)
            folder = self._tmp.name
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._items: dict[str, tuple[Path, Builder]] = {}

    def add_all(
        self, builders: Mapping[str, Builder], progress: bool = False, workers: int | None = None
    ) -> None:
        """Build and save every item not saved yet (each module freed right away), in
        `workers` forked processes (default: the usable cores, at most 4) when there are
        enough items: saving is not timed, and exporting hundreds of networks to ONNX one by
        one took half of a validation's wall time. Stems are numbered: keys may hold any
        character."""
        from latency.protocol import progress_bar

        todo = [k for k in dict.fromkeys(builders) if k not in self._items]
        stems = {k: self.folder / f"item{len(self._items) + i:05d}" for i, k in enumerate(todo)}
        n = min(workers or _usable_cores(), 4, len(todo) // 4)
        if n >= 2 and "fork" in mp.get_all_start_methods():
            global _JOBS
            _JOBS = [(self.backend, builders[k], stems[k]) for k in todo]
            try:  # forked children inherit the builders: closures need no pickling
                with mp.get_context("fork").Pool(n, initializer=_one_thread) as pool:
                    done = pool.imap_unordered(_save_job, range(len(todo)))
                    for _ in progress_bar(done, progress, "save"):
                        pass
            finally:
                _JOBS = []
        else:
            for k in progress_bar(todo, progress, "save"):
                _save(self.backend, builders[k], stems[k])
        for k in todo:
            self._items[k] = (stems[k], builders[k])

    def load(self, key: str) -> Run:
        """A fresh (not yet warmed up) run of a saved item."""
        stem, build = self._items[key]
        return self.backend.load(stem, build)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Stash:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
