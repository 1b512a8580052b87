"""Allocators (track 1): layer info (+ weights, + calibration context) -> {layer: rate}. Each module of
this package registers one in ``ALLOCATORS`` (imported on first lookup)."""

from .base import ALLOCATORS, Allocator, AllocatorConfig, AllocContext, build_allocator

__all__ = ["ALLOCATORS", "AllocContext", "Allocator", "AllocatorConfig", "build_allocator"]
