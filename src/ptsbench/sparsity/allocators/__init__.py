"""Allocators register themselves by name (``ALLOCATORS``); every submodule is imported."""
from ...autoload import import_submodules
from .base import ALLOCATORS, Allocator, AllocContext, build_allocator

import_submodules(__name__, __path__)

__all__ = ["ALLOCATORS", "AllocContext", "Allocator", "build_allocator"]
