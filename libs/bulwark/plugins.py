"""A small registry of named plugins (model families, attacks, explainers): duplicates and unknown names
are errors that list the valid names."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from bulwark.errors import BulwarkError, Reason

T = TypeVar("T")


class UnknownPluginError(BulwarkError):
    """A name that no registered plugin has."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(Reason.INVALID_ARGUMENT, f"unknown {kind} {name!r}; known: {', '.join(known) or '(none)'}")


class Registry(Generic[T]):
    """Plugins keyed by their class attribute `name`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, item: T) -> T:
        """Add a plugin; a second plugin with the same name is an error."""
        name = getattr(item, "name")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The plugin called `name`, or `UnknownPluginError` listing the known ones."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownPluginError(self.kind, name, sorted(self._items)) from None

    def names(self) -> list[str]:
        """Registered names."""
        return sorted(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())
