"""A tiny name -> object registry (one per kind: allocator, task, model family, ...).

Registering a name twice is an error, and a lookup miss lists the valid names, so a typo in a
config knob fails loudly and tells the user what they could have written.

An entry may carry its table label and row order (``register("fcpts", label="FCPTS ({init})",
order=3)``): the tables ask the registry, so a new allocator or family needs no second list
to keep in sync. ``{knob}`` in a label is filled from the entry's config, itself labelled when
it names another entry (FCPTS with ``init: erk`` -> 'FCPTS (ERK)').
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, knob: str | None = None):
        self.kind = kind
        self.knob = knob or kind
        self._items: dict[str, T] = {}
        self._labels: dict[str, str] = {}
        self._order: dict[str, int] = {}

    def register(self, name: str, label: str | None = None, order: int | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            if label is not None:
                self._labels[name] = label
            if order is not None:
                self._order[name] = order
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} '{name}' for `{self.knob}`; valid choices: {', '.join(self.names())}"
            ) from None

    def label(self, name: str, config: Mapping[str, Any] | None = None) -> str:
        """Table label of entry ``name`` (its name when it has none), ``{knob}`` filled from ``config``."""
        template = self._labels.get(str(name), str(name))
        return re.sub(r"\{(\w+)\}", lambda m: self.label(str((config or {}).get(m.group(1), "?"))), template)

    def order(self, name: str, config: Mapping[str, Any] | None = None) -> tuple:
        """Sort key of entry ``name``'s table row: its order, then the order of the entries its label names."""
        template = self._labels.get(str(name), "")
        inner = tuple(self._order.get(str((config or {}).get(k)), 99) for k in re.findall(r"\{(\w+)\}", template))
        return (self._order.get(str(name), 99), *inner, self.label(name, config))

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
