"""Allocators register themselves by name (``ALLOCATORS``); every submodule is imported."""

from ...autoload import import_submodules
from ...schemas import register_group
from .base import ALLOCATORS, Allocator, AllocContext, build_allocator

import_submodules(__name__, __path__)
register_group("allocator", "name", lambda: {n: ALLOCATORS.get(n).config for n in ALLOCATORS})

__all__ = ["ALLOCATORS", "AllocContext", "Allocator", "build_allocator"]
