"""Uniform allocation (paper §2.2, heuristic strategy; Gale et al. 2019).

Rule: every prunable layer gets the global rate, s_l = S.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...schemas import knob
from .base import ALLOCATORS, Allocator, AllocatorConfig


@dataclass
class UniformConfig(AllocatorConfig):
    name: str = knob("uniform")


@ALLOCATORS.register("uniform", label="Uniform", order=0)
class UniformAllocator(Allocator):
    name = "uniform"
    config = UniformConfig

    def allocate(self, layers, weights, rate, context=None):
        return {layer.name: float(rate) for layer in layers}
