"""A name -> class registry for the levels of a factor (encoders, priors, data sets, objectives).

A new level is one class plus one `register` line. Look-ups of an unknown name raise an RlvError
that lists the names that exist, so a typo in a sweep file reads as a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rlv.errors import RlvError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered level: the class and the keyword arguments it is built with."""

    cls: type[T]
    kwargs: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps level names to subclasses of one base class."""

    def __init__(self, kind: str, base: type) -> None:  # type, not type[T]: bases are abstract
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, cls: type[T], **kwargs: Any) -> type[T]:
        """Add `name`; `kwargs` are fixed constructor arguments of this level (e.g. flows=6)."""
        if name in self._entries:
            raise RlvError(f"{self.kind} {name!r} is already registered")
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise RlvError(f"{self.kind} {name!r}: {cls!r} is not a subclass of {self.base.__name__}")
        self._entries[name] = Entry(cls, dict(kwargs))
        return cls

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise RlvError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries)}"
            ) from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Instantiate level `name` with its registered kwargs plus the given arguments."""
        entry = self.get(name)
        return entry.cls(*args, **entry.kwargs, **kwargs)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)
