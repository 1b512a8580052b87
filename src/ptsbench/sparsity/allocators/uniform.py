"""Uniform allocation (paper §2.2, heuristic strategy; Gale et al. 2019).

Rule: every prunable layer gets the global rate, s_l = S.
"""

from __future__ import annotations

from .base import ALLOCATORS, Allocator, AllocatorConfig


@ALLOCATORS.register("uniform", config=AllocatorConfig, label="Uniform", order=0)
class UniformAllocator(Allocator):
    def allocate(self, layers, weights, rate, context=None):
        return {layer.name: float(rate) for layer in layers}
