"""Per-family model adapters: each module of this package registers one by family name (``model.family``),
imported on first lookup."""

from .base import (
    ADAPTERS,
    GRANULARITIES,
    GenericAdapter,
    ModelAdapter,
    Unit,
    block_unit,
    get_adapter,
    prunable_in,
    single_units,
    unit_mode,
)

__all__ = [
    "ADAPTERS",
    "GRANULARITIES",
    "GenericAdapter",
    "ModelAdapter",
    "Unit",
    "block_unit",
    "get_adapter",
    "prunable_in",
    "single_units",
    "unit_mode",
]
