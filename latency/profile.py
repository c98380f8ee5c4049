"""Build (or complete) a latency table, and measure whole networks the same way.

Profiling is resumable: given an existing table, only the missing keys are built and
measured, so re-running the same command after an interruption (or after the search space
grew) costs only the new keys. With `save_to`, the table is saved after every chunk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from latency.backends import Backend, get_backend
from latency.errors import TableError
from latency.header import TableHeader
from latency.protocol import Builder, Protocol, measure
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
    """
    backend = get_backend(backend) if isinstance(backend, str) else backend
    fields = backend.header_fields()
    if table is not None:
        protocol = _check_resumable(table, fields, protocol, force)
        todo = table.missing(items)
        result = LatencyTable(table.header.copy(), dict(table.entries))
    else:
        protocol = protocol or Protocol()
        todo = list(dict.fromkeys(items))
        result = None
    shape: dict[str, object] = {}
    if result is not None:
        shape.update(batch=result.header.batch, dtype=result.header.dtype)

    def checked(key: str) -> Builder:
        def build() -> tuple:
            module, x = items[key]()
            got = {"batch": int(x.shape[0]), "dtype": str(x.dtype).removeprefix("torch.")}
            if shape and got != shape:
                raise TableError(
                    f"item {key!r} has batch/dtype {got}, but the table holds {shape}; "
                    "one table = one batch size and dtype: build items accordingly"
                )
            shape.update(got)
            return module, x

        return build

    size = chunk if chunk > 0 else max(len(todo), 1)
    for start in range(0, len(todo), size):
        keys = todo[start : start + size]
        got = measure(
            {k: checked(k) for k in keys},
            backend,
            protocol,
            progress,
            desc=f"profile {backend.name} [{start + len(keys)}/{len(todo)}]",
        )
        if result is None:
            header = TableHeader(
                **fields,
                batch=int(shape["batch"]),
                dtype=str(shape["dtype"]),
                protocol=protocol.to_dict(),
                profile_command=profile_command,
            )
            result = LatencyTable(header)
        for k, entry in got.entries.items():
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
    for name in ("backend", "device", "threads"):
        if getattr(h, name) != fields[name] and not force:
            raise TableError(
                f"cannot resume a table measured with {name}={getattr(h, name)!r} using "
                f"{name}={fields[name]!r}; use the same setup or start a new table file"
            )
    if protocol is None:
        return Protocol.from_dict(h.protocol) if h.protocol else Protocol()
    if h.protocol and protocol.to_dict() != h.protocol:
        raise TableError(
            f"cannot resume a table measured with protocol {h.protocol} using "
            f"{protocol.to_dict()}; pass the same protocol (or none) or start a new table file"
        )
    return protocol


def measure_networks(
    networks: Mapping[str, Builder],
    backend: Backend | str,
    protocol: Protocol | None = None,
    progress: bool = True,
    prepared: dict | None = None,
) -> dict[str, Entry]:
    """End-to-end latency of whole networks, with the same protocol as the table's ops.

    `prepared`: see `latency.protocol.measure` (re-measuring without re-exporting)."""
    backend = get_backend(backend) if isinstance(backend, str) else backend
    got = measure(
        networks, backend, protocol or Protocol(), progress, desc="networks", prepared=prepared
    )
    return got.entries
