"""A name -> class registry for the levels of a factor (encoders, priors, data sets, objectives).

A new level is one class plus one `register` line (rlv/levels.py holds the lines). A level can be
registered by its class or by a "module:Class" path; a path is imported only when the level is
built, so checking a name (`rlv check` on a laptop) needs neither torch nor the level's code.
Look-ups of an unknown name raise an RlvError that lists the names that exist, so a typo in a
sweep file reads as a one-line error.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rlv.errors import RlvError

T = TypeVar("T")


def resolve(target: str | type) -> type:
    """The class a "module:Class" path names (a class is returned as it is)."""
    if isinstance(target, type):
        return target
    module, _, attr = target.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise RlvError(f"cannot load {target}: {exc}") from None
    if not isinstance(found, type):
        raise RlvError(f"{target} is not a class")
    return found


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered level: its class (or the path to it) and the arguments it is built with."""

    kind: str
    name: str
    target: str | type
    base: str | type
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type[T]:
        cls, base = resolve(self.target), resolve(self.base)
        if not issubclass(cls, base):
            raise RlvError(f"{self.kind} {self.name!r}: {cls!r} is not a subclass of {base.__name__}")
        return cls  # type: ignore[return-value]


class Registry(Generic[T]):
    """Maps level names to subclasses of one base class (given as a class or a path)."""

    def __init__(self, kind: str, base: str | type) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, cls: str | type, **kwargs: Any) -> str | type:
        """Add `name`; `kwargs` are fixed constructor arguments of this level (e.g. flows=6)."""
        if name in self._entries:
            raise RlvError(f"{self.kind} {name!r} is already registered")
        entry: Entry[T] = Entry(self.kind, name, cls, self.base, dict(kwargs))
        if isinstance(cls, type):
            entry.cls  # noqa: B018  (a class given directly is checked at once)
        self._entries[name] = entry
        return cls  # type: ignore[return-value]

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
