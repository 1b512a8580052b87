"""Per-family adapters register themselves by family name; every submodule is imported."""

from ...autoload import import_submodules
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

import_submodules(__name__, __path__)

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
