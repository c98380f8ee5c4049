"""Typed configs from plain dicts (JSON, a resolved Hydra config): one builder that refuses
unknown keys by their full dotted name, so a typo fails instead of being silently ignored.

>>> from dataclasses import dataclass
>>> @dataclass
... class Cfg:
...     lr: float = 0.1
>>> from_dict(Cfg, {"lr": 1})
Cfg(lr=1.0)
>>> from_dict(Cfg, {"lr_": 1})
Traceback (most recent call last):
...
latency.config_dict.ConfigError: unknown config key(s) lr_; known: lr
>>> from_dict(Cfg, {"lr": "abc"})
Traceback (most recent call last):
...
latency.config_dict.ConfigError: lr='abc': expected a number
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key or value that cannot work; the message names it."""


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from nested mappings.

    Nested dataclass fields are built recursively (a None or missing mapping gives the
    defaults), lists become tuples where the field is a tuple, ints become floats where the
    field is a float. Errors raised by `cls.__post_init__` pass through unchanged (they
    carry their own message); a wrong argument becomes a ConfigError naming the section."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
            f"known: {', '.join(where + k for k in names)}"
        )
    kwargs = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from e


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _convert(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, {} if value is None else value, path)  # type: ignore[arg-type]
    _check_type(hint, value, path)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    floaty = hint is float or (isinstance(hint, types.UnionType) and float in hint.__args__)
    if floaty and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _fits(kind: Any, value: Any) -> bool:
    if kind is Any or kind is object:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        return isinstance(value, list | tuple)
    if origin is dict or kind is dict:
        return isinstance(value, Mapping)
    return True  # a type this checker does not know: let the dataclass judge


def _check_type(hint: Any, value: Any, path: str) -> None:
    """A scalar of the wrong type (`epochs='abc'`) fails here, naming its key and what it
    takes, instead of deep inside the run with a message that names neither."""
    kinds = hint.__args__ if isinstance(hint, types.UnionType) else (hint,)
    if any(_fits(k, value) for k in kinds):
        return
    names = [_KINDS.get(k, getattr(k, "__name__", str(k))) for k in kinds if k is not type(None)]
    if type(None) in kinds:
        names.append("null")
    raise ConfigError(f"{path}={value!r}: expected {' or '.join(names)}")
