"""The measurement protocol, built for a noisy shared machine.

Why each step:
- warmup per item (caches, allocator, lazy init) and an adaptive window length, so that a
  window of back-to-back calls lasts >= `window_ms` (timer resolution, call overhead);
- `rounds` interleaved rounds, each over all items in a fresh shuffled order, so a slow
  episode of the machine hits every item about equally instead of a few items entirely;
- every call timed; a window is summarised by its minimum (filters interrupts);
- a reference item re-timed every `reference_every` items tracks machine speed; each
  window is rescaled by (fastest reference / reference around that window), which removes
  slow episodes that hit everything (frequency scaling, a neighbour's job);
- the reported statistic is a low quantile over rounds of those window minima; p10/p90
  over all speed-corrected calls show the spread.

Items are either all live at once (table keys: small ops), or streamed from a `Stash` on
disk in chunks (whole networks: a chunk live at a time besides the reference), each item
loaded and warmed up once per measurement.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from latency.backends import Backend, Run
from latency.table import Entry

if TYPE_CHECKING:
    from latency.stash import Stash

Builder = Callable[[], tuple[nn.Module, torch.Tensor]]


@dataclass(frozen=True)
class Protocol:
    """Knobs of the protocol; stored in the table header so tables say how they were made."""

    warmup: int = 10
    rounds: int = 7
    repeats: int = 5
    max_repeats: int = 200
    window_ms: float = 5.0
    quantile: float = 0.25
    reference_every: int = 8
    speed_correction: bool = True
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        stat = f"q{self.quantile:g} over rounds of window minima"
        if self.speed_correction:
            stat += ", speed-corrected by a reference item"
        return {**asdict(self), "statistic": stat}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Protocol:
        """The inverse of `to_dict` (its derived `statistic` is dropped); any other
        unknown key is a ConfigError, so a typo in a protocol override is never ignored."""
        from latency.config_dict import from_dict

        return from_dict(cls, {k: v for k, v in data.items() if k != "statistic"})


@dataclass
class Measurement:
    """Entries per item, plus diagnostics (reference drift = slowest/fastest reference)."""

    entries: dict[str, Entry]
    reference: str
    reference_drift: float
    repeats: dict[str, int] = field(default_factory=dict)


def measure(
    builders: Mapping[str, Builder],
    backend: Backend,
    protocol: Protocol,
    progress: bool = True,
    desc: str = "measure",
    prepared: dict[str, Run] | None = None,
    stash: Stash | None = None,
) -> Measurement:
    """Measure every item with `protocol` on `backend`.

    By default all items are prepared once and stay live. `prepared`, a dict owned by the
    caller, caches those runs by key: measuring the same items again with it skips
    building and preparing them.

    With `stash` (a `latency.stash.Stash`), items are streamed instead: each is built and
    saved to the stash's folder once, then measured in chunks of `stash.live` items: a
    chunk is loaded and warmed up once, its rounds interleave its items in a fresh shuffled
    order, and it is freed before the next one. Memory is that of one chunk plus the
    reference, whatever the number of items; every item is loaded once per measurement.
    (Loading an item for every window instead cost 4x the time and tripled the spread
    between two measurements of the same ONNX Runtime networks: a session just created
    has not settled after a few calls. Slow episodes that hit a whole chunk are what the
    reference's speed correction removes.)
    """
    if not builders:
        return Measurement({}, "", 1.0)
    keys = list(builders)
    pool: _Pool
    if stash is not None:
        stash.add_all(builders, progress)
        pool, size = _Streamed(stash), max(int(stash.live), 1)
    else:
        pool, size = _Live(builders, backend, prepared, progress, f"{desc}: prepare"), len(keys)
    rng = random.Random(protocol.seed)
    repeats: dict[str, int] = {}
    refs: list[float] = []
    pending: list[tuple[str, np.ndarray, int]] = []  # (key, per-call ms, index of ref before)
    ref, ref_run = "", None
    bar = progress_bar(range(protocol.rounds * len(keys)), progress, desc)
    it = iter(bar)
    gc_was = gc.isenabled()
    try:
        for part in (keys[i : i + size] for i in range(0, len(keys), size)):
            runs = {k: pool.get(k) for k in part}  # loaded (streamed) or live: warm each up
            first: dict[str, float] = {}
            for k in part:
                for _ in range(protocol.warmup):
                    runs[k]()
                first[k] = float(np.median(backend.time_calls(runs[k], 3)))
                want = math.ceil(protocol.window_ms / max(first[k], 1e-6))
                repeats[k] = int(min(max(want, protocol.repeats), protocol.max_repeats))
            if ref_run is None:  # the first chunk's item of median speed, live to the end
                ref = sorted(part, key=lambda k: first[k])[len(part) // 2]
                ref_run = pool.get(ref)
            gc.disable()
            for _ in range(protocol.rounds):
                order = part[:]
                rng.shuffle(order)
                for i, k in enumerate(order):
                    if i % max(protocol.reference_every, 1) == 0:
                        refs.append(min(backend.time_calls(ref_run, repeats[ref])))
                    times = np.asarray(backend.time_calls(runs[k], repeats[k]))
                    pending.append((k, times, len(refs) - 1))
                    next(it, None)
                refs.append(min(backend.time_calls(ref_run, repeats[ref])))
            if gc_was:
                gc.enable()
            runs.clear()
            for k in part:
                pool.put(k)
            if stash is not None:
                gc.collect()  # once per chunk, outside any timed window: what cycles still hold
    finally:
        ref_run = None
        if ref:
            pool.put(ref)
        if gc_was:
            gc.enable()
        if hasattr(bar, "close"):
            bar.close()
    best = min(refs)
    calls: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    windows: dict[str, list[float]] = {k: [] for k in keys}
    for k, times, j in pending:
        # Reference just before and just after the window; min() ignores a spike in one.
        scale = best / min(refs[j], refs[j + 1]) if protocol.speed_correction else 1.0
        windows[k].append(float(times.min()) * scale)
        calls[k].append(times * scale)
    entries = {}
    for k in keys:
        all_calls = np.concatenate(calls[k])
        entries[k] = Entry(
            ms=float(np.quantile(windows[k], protocol.quantile)),
            calls_p10_ms=float(np.quantile(all_calls, 0.1)),
            calls_p90_ms=float(np.quantile(all_calls, 0.9)),
            n=int(all_calls.size),
        )
    return Measurement(entries, ref, max(refs) / best, repeats)


class _Pool:
    """Runs by key: `get` gives one, `put` hands it back."""

    def get(self, key: str) -> Run:
        raise NotImplementedError

    def put(self, key: str) -> None:
        pass


class _Live(_Pool):
    """Every item prepared up front and kept."""

    def __init__(
        self,
        builders: Mapping[str, Builder],
        backend: Backend,
        prepared: dict[str, Run] | None,
        progress: bool,
        desc: str,
    ) -> None:
        self.runs = prepared if prepared is not None else {}
        for k in progress_bar(list(builders), progress, desc):
            if k not in self.runs:
                self.runs[k] = backend.prepare(*builders[k]())

    def get(self, key: str) -> Run:
        return self.runs[key]


class _Streamed(_Pool):
    """Items loaded from a stash on `get` and freed on the last `put` (counted, so the
    reference, held through the rounds, is not loaded twice when its own turn comes)."""

    def __init__(self, stash: Stash) -> None:
        self.stash = stash
        self.live: dict[str, tuple[Run, int]] = {}

    def get(self, key: str) -> Run:
        if key in self.live:
            run, n = self.live[key]
            self.live[key] = (run, n + 1)
            return run
        run = self.stash.load(key)
        self.live[key] = (run, 1)
        return run

    def put(self, key: str) -> None:
        run, n = self.live.pop(key)
        if n > 1:
            self.live[key] = (run, n - 1)


def progress_bar(it: Any, progress: bool, desc: str) -> Any:
    """tqdm when asked and installed, else the plain iterable."""
    if not progress:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return it
    return tqdm(it, desc=desc, leave=False)
