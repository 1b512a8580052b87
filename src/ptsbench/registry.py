"""A name -> plugin registry, one per kind (allocator, mask criterion, reconstruction, task, dataset,
model source, model family).

A plugin is registered once, under its name, with everything the rest of the code may ask of it:
its typed knobs (``config``: a ``ptsbench.schemas.Schema`` dataclass), its table label and row order,
and any traits (``needs_calibration=True``, ``loads_weights=True``, ...)::

    @ALLOCATORS.register("erk", config=ERKConfig, label="ERK", order=2)
    class ERKAllocator(Allocator): ...

Registering a name twice is an error, and a lookup miss lists the valid names, so a typo in a config
knob fails loudly and tells the user what they could have written. Labels may name a knob,
``label="FCPTS ({init})"``: the tables fill it from the entry's config, itself labelled when it names
another entry ('FCPTS (ERK)').

A registry knows the package its plugins live in (``plugins=``) and imports that package's modules
on first use, so nothing imports a module for its registering side effect and a new plugin is a new
module in that package. Plugins outside the tree are imported by ``ptsbench.config.register``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plugin: the object, its knobs' schema, its table label and order, its traits."""

    name: str
    obj: T
    config: type | None = None
    label: str | None = None
    order: int | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)

    def trait(self, key: str, default: Any = None) -> Any:
        return self.traits.get(key, default)


class Registry(Generic[T]):
    def __init__(self, kind: str, knob: str | None = None, plugins: str | None = None):
        """``kind``: what the entries are (for messages); ``knob``: the config knob naming one;
        ``plugins``: the package whose modules register the entries (imported on first lookup)."""
        self.kind = kind
        self.knob = knob or kind
        self.plugins = plugins
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = plugins is None

    def register(
        self,
        name: str,
        *,
        config: type | None = None,
        label: str | None = None,
        order: int | None = None,
        **traits: Any,
    ) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = Entry(name, obj, config, label, order, dict(traits))
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: a plugin module that looks the registry up must not recurse
        package = importlib.import_module(str(self.plugins))
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.plugins}.{info.name}")

    def entry(self, name: str) -> Entry[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} '{name}' for `{self.knob}`; valid choices: {', '.join(self.names())}"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def config(self, name: str) -> type[Any]:
        """The knobs' schema of entry ``name``."""
        cfg = self.entry(name).config
        if cfg is None:
            raise KeyError(f"{self.kind} '{name}' was registered without a config schema")
        return cfg

    def trait(self, name: str, key: str, default: Any = None) -> Any:
        return self.entry(name).trait(key, default)

    def label(self, name: str, config: Mapping[str, Any] | None = None) -> str:
        """Table label of entry ``name`` (its name when it has none), ``{knob}`` filled from ``config``."""
        self._load()
        hit = self._entries.get(str(name))
        template = hit.label if hit is not None and hit.label is not None else str(name)
        return re.sub(r"\{(\w+)\}", lambda m: self.label(str((config or {}).get(m.group(1), "?"))), template)

    def order(self, name: str, config: Mapping[str, Any] | None = None) -> tuple:
        """Sort key of entry ``name``'s table row: its order, then the order of the entries its label names."""
        self._load()

        def own(key: str) -> int:
            hit = self._entries.get(key)
            return hit.order if hit is not None and hit.order is not None else 99

        hit = self._entries.get(str(name))
        template = (hit.label if hit is not None else None) or ""
        inner = tuple(own(str((config or {}).get(k))) for k in re.findall(r"\{(\w+)\}", template))
        return (own(str(name)), *inner, self.label(name, config))

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
