"""Model adapters: each family declares its prunable layers and reconstruction units.

A ``Unit`` is a chain of modules applied in order, ``out = m_k(...m_1(x))``; its input is what
its first module receives and its output what its last module returns. Granularities (docs/methods.md#reconstruction):
- ``single``: one Conv/Linear (BN already folded), output before the activation;
- ``layer``: Conv(+folded BN)+activation, Linear+activation;
- ``block``: the family's residual/transformer block, output after the residual add and the
  final activation; layers outside any block (stem, head) become ``layer`` units.
Adapters list units explicitly; ``GenericAdapter`` (every prunable layer a ``single`` unit)
serves a model without a registered family at ``single`` granularity only: ``layer``/``block``
units of an unknown family are a ConfigError naming the known families, never a silent fall-back.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ...errors import ConfigError
from ...registry import Registry
from ...sparsity.layers import PRUNABLE_TYPES

GRANULARITIES = ("single", "layer", "block")
ADAPTERS: Registry[type[ModelAdapter]] = Registry("model adapter", "model.family", plugins="ptsbench.models.adapters")


@dataclass(frozen=True)
class Unit:
    name: str
    modules: tuple[str, ...]  # qualified module names, applied in order
    layers: tuple[str, ...]  # prunable layers inside the unit (the weights it trains)
    kind: str  # single | layer | block


class ModelAdapter:
    """Base adapter. Subclasses override ``units`` (and ``dense_globs`` where a family keeps
    parts dense by default, e.g. diffusion time embeddings). ``family``: the name it was looked up by."""

    family = "generic"
    dense_globs: tuple[str, ...] = ()

    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        raise NotImplementedError

    def spine(self, model: nn.Module) -> list[Unit]:
        """The ``block`` units, offered to the calibration feeder as checkpoints of the sparse forward
        (it verifies on data which block feeds the next); none for a family without blocks."""
        try:
            return self.units(model, "block")
        except ConfigError:
            return []

    def check_granularity(self, granularity: str) -> None:
        if granularity not in GRANULARITIES:
            raise ConfigError(f"reconstruction.unitwiseity='{granularity}'; valid choices: {', '.join(GRANULARITIES)}")

    def mode(self, granularity: str) -> tuple[bool, str]:
        """``unit_mode`` after checking that ``granularity`` is a valid choice."""
        self.check_granularity(granularity)
        return unit_mode(granularity)


def single_units(model: nn.Module, names: list[str] | None = None) -> list[Unit]:
    names = names or [n for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    return [Unit(n, (n,), (n,), "single") for n in names]


def unit_mode(granularity: str) -> tuple[bool, str]:
    """(does a layer's activation join its unit, kind of the units that are not whole blocks)."""
    return granularity != "single", "single" if granularity == "single" else "layer"


def block_unit(model: nn.Module, prefix: str) -> Unit:
    """The submodule ``prefix`` as one ``block`` unit that trains every prunable layer inside it."""
    return Unit(prefix, (prefix,), prunable_in(model, prefix), "block")


def prunable_in(model: nn.Module, prefix: str) -> tuple[str, ...]:
    mod = model.get_submodule(prefix) if prefix else model
    pre = f"{prefix}." if prefix else ""
    return tuple(pre + n for n, m in mod.named_modules() if isinstance(m, PRUNABLE_TYPES))


@ADAPTERS.register("generic")
class GenericAdapter(ModelAdapter):
    def units(self, model, granularity):
        self.check_granularity(granularity)
        if granularity != "single":
            raise ConfigError(unknown_family_message(None, granularity))
        return single_units(model)


def unknown_family_message(family: str | None, granularity: str) -> str:
    known = ", ".join(n for n in ADAPTERS.names() if n != "generic")
    return (
        f"reconstruction={granularity} needs the {granularity} units of the model, but model.family={family!r} "
        f"has no adapter; known families: {known}. Use reconstruction=single (every layer its own unit), "
        f"set model.family, or add an adapter (docs/extending.md)"
    )


def get_adapter(family: str | None, granularity: str | None = None) -> ModelAdapter:
    """The adapter registered for ``family``; else the generic one, which only knows ``single`` units,
    so a ``layer``/``block`` ``granularity`` with an unknown family is a ConfigError."""
    adapter = ADAPTERS.get(family)() if family and family in ADAPTERS else GenericAdapter()
    if family and family in ADAPTERS:
        adapter.family = family
    if isinstance(adapter, GenericAdapter) and granularity in GRANULARITIES and granularity != "single":
        raise ConfigError(unknown_family_message(family, granularity))
    return adapter
