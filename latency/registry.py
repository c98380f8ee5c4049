"""A tiny decorator registry, used only at real extension points (latency backends,
arch-gradient estimators).

>>> COLORS: Registry[type] = Registry("color")
>>> @COLORS.register("red")
... class Red: ...
>>> COLORS.get("red") is Red
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object. Refuses duplicates; its KeyError names the registry and the choices."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.name} registry already has {name!r}")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"no {name!r} in the {self.name} registry; choose one of {sorted(self._items)}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> Any:
        """Registries of classes: look up `name` and instantiate it with `kwargs`."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
