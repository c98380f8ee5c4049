"""Build (or complete) a latency table, and measure whole networks the same way.

Profiling is resumable: given an existing table, only the missing keys are built and
measured, so re-running the same command after an interruption (or after the search space
grew) costs only the new keys. With `save_to`, the table is saved after every chunk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from latency.anchor import ANCHOR_KEY, anchor_builder, split_anchor
from latency.backends import Backend, get_backend
from latency.errors import TableError
from latency.header import TableHeader
from latency.protocol import Builder, Protocol, measure
from latency.stash import Stash
from latency.table import Entry, LatencyTable


def profile(
    items: Mapping[str, Builder],
    backend: Backend | str,
    table: LatencyTable | None = None,
    protocol: Protocol | None = None,
    progress: bool = True,
    profile_command: str = "",
    save_to: str | os.PathLike[str] | None = None,
    chunk: int = 0,
    force: bool = False,
) -> LatencyTable:
    """Measure the keys of `items` missing from `table`; return the completed table.
    `force` extends a table measured with another backend, device or thread count.

    `items` maps a key to a builder returning `(module, example_input)`; only missing keys
    are built. `chunk` > 0 measures that many keys at a time (bounded memory, and with
    `save_to`, bounded loss on interruption).

    Every chunk also times the speed anchor (`latency.anchor`): a new table stores its ms,
    and keys measured later (next chunks, resumed runs) are rescaled to that speed. A table
    without an anchor (written before anchors) is extended as measured.
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    fields = backend.header_fields()
    result: LatencyTable | None = None
    if table is not None:
        protocol = _check_resumable(table, fields, protocol, force)
        todo = table.missing(items)
        result = LatencyTable(table.header.copy(), dict(table.entries))
    else:
        protocol = protocol or Protocol()
        todo = list(dict.fromkeys(items))

    def checked(key: str) -> Builder:
        def build() -> tuple:
            nonlocal result
            module, x = items[key]()
            got = {"batch": int(x.shape[0]), "dtype": str(x.dtype).removeprefix("torch.")}
            if result is None:  # the first item sets the new table's batch and dtype
                header = TableHeader(
                    **fields,
                    **got,
                    protocol=protocol.to_dict(),
                    profile_command=profile_command,
                )
                result = LatencyTable(header)
            result.header.require(
                got,
                source=f"item {key!r}: the table",
                asked="the item",
                fix="one table = one batch size and dtype: build items accordingly",
            )
            return module, x

        return build

    if ANCHOR_KEY in items:
        raise TableError(f"{ANCHOR_KEY!r} is reserved for the speed anchor; rename that item")
    anchored = table is None or table.header.anchor_ms is not None
    size = chunk if chunk > 0 else max(len(todo), 1)
    for start in range(0, len(todo), size):
        keys = todo[start : start + size]
        got = measure(
            {k: checked(k) for k in keys} | ({ANCHOR_KEY: anchor_builder} if anchored else {}),
            backend,
            protocol,
            progress,
            desc=f"profile {backend.name} [{start + len(keys)}/{len(todo)}]",
        )
        assert result is not None  # set by the first build
        entries = got.entries
        if anchored:  # the first chunk of a new table sets its speed
            entries, now = split_anchor(entries, result.header.anchor_ms)
            result.header.anchor_ms = result.header.anchor_ms or now
        for k, entry in entries.items():
            result.add(k, entry)
        if save_to is not None:
            result.save(save_to)
    if result is None:  # no items and no table: there is nothing to return
        raise TableError("profile() got no items and no table; give at least one item")
    return result


def _check_resumable(
    table: LatencyTable, fields: dict, protocol: Protocol | None, force: bool = False
) -> Protocol:
    """Refuse to extend a table measured elsewhere or otherwise (its sums would mix setups)
    unless `force`; the protocol must match in any case."""
    h = table.header
    h.require(
        {name: fields[name] for name in ("backend", "device", "threads")},
        force,
        asked="resuming",
        fix="cannot resume it with another setup: use the same setup, start a new table file, "
        "or pass force=True to extend it anyway",
    )
    if protocol is None:
        return Protocol.from_dict(h.protocol) if h.protocol else Protocol()
    if h.protocol:
        h.require(
            {"protocol": protocol.to_dict()},
            asked="resuming",
            fix="cannot resume it with another protocol: pass the same protocol (or none) or "
            "start a new table file",
        )
    return protocol


def measure_networks(
    networks: Mapping[str, Builder],
    backend: Backend | str,
    protocol: Protocol | None = None,
    progress: bool = True,
    prepared: dict | None = None,
    stash: Stash | None = None,
) -> dict[str, Entry]:
    """End-to-end latency of whole networks, with the same protocol as the table's ops.

    `prepared` (all networks live, re-measured without re-exporting) or `stash` (streamed
    from disk: the memory of one network): see `latency.protocol.measure`."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    got = measure(
        networks,
        backend,
        protocol or Protocol(),
        progress,
        desc="networks",
        prepared=prepared,
        stash=stash,
    )
    return got.entries
