"""Errors of the latency package; each message says what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence


class TableError(ValueError):
    """A table cannot be used as asked (missing, malformed, from another device...)."""


class MissingKeyError(KeyError):
    """Keys absent from a table. Names them and the command that measures them.

    Profiling is resumable: the same command measures only the keys still missing.
    """

    def __init__(self, keys: Sequence[str], profile_command: str = "") -> None:
        self.keys = list(keys)
        self.profile_command = profile_command
        super().__init__(self.message)

    @property
    def message(self) -> str:
        shown = ", ".join(repr(k) for k in self.keys[:5])
        more = f" and {len(self.keys) - 5} more" if len(self.keys) > 5 else ""
        one = len(self.keys) == 1
        noun, it = ("key", "it") if one else ("keys", "them")
        how = (
            f"measure {it} with: {self.profile_command}  "
            "(resumable: only missing keys are measured)"
            if self.profile_command
            else f"measure {it} with the profile command that built this table (the table "
            "records no profile_command)"
        )
        return f"latency table has no {noun} {shown}{more}; {how}"

    def __reduce__(self) -> tuple:  # survive pickling (multiprocessing, DDP workers)
        return (type(self), (self.keys, self.profile_command))

    def __str__(self) -> str:  # KeyError's default str() would repr() the message
        return self.message
