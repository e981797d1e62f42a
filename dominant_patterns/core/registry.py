"""A tiny name -> constructor registry; every lookup by name in the project goes through one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from dominant_patterns.core.errors import UserInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise an error listing the valid choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under each of ``names``."""

        def decorator(obj: T) -> T:
            for name in names:
                if name in self._items:
                    raise KeyError(f"{self.kind} '{name}' is registered twice")
                self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserInputError(
                f"unknown {self.kind} '{name}'. Valid choices: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
