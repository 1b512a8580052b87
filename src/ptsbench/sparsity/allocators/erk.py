"""ERK allocation (Erdős–Rényi-Kernel, Evci et al. 2020 "RigL"), docs/methods.md#allocators.

Rule: layer l keeps a density d_l = eps * r_l with r_l = (sum of weight-shape dims /
product of dims) ** power. eps is solved so that the kept parameters equal (1 - S) of the
total. A layer whose density would exceed 1 is made dense, taken out of the budget, and eps
is solved again until no density exceeds 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...schemas import knob
from .base import ALLOCATORS, Allocator, AllocatorConfig


@dataclass(frozen=True)
class ERKConfig(AllocatorConfig):
    power: float = knob(1.0, gt=0, le=10)  # r_l = (sum of dims / product of dims) ** power; <= 0 inverts the ranking


def erk_densities(shapes: dict[str, tuple[int, ...]], rate: float, power: float = 1.0) -> dict[str, float]:
    numel = {n: _prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / _prod(s)) ** power for n, s in shapes.items()}
    budget = (1.0 - rate) * sum(numel.values())
    dense: set[str] = set()
    while True:
        free = [n for n in shapes if n not in dense]
        kept_by_dense = sum(numel[n] for n in dense)
        denom = sum(raw[n] * numel[n] for n in free)
        eps = (budget - kept_by_dense) / denom if denom > 0 else 0.0
        over = [n for n in free if eps * raw[n] > 1.0]
        if not over:
            break
        dense.update(over)
    return {n: 1.0 if n in dense else max(0.0, eps * raw[n]) for n in shapes}


def _prod(shape) -> int:
    p = 1
    for d in shape:
        p *= d
    return p


@ALLOCATORS.register("erk", config=ERKConfig, label="ERK", order=2)
class ERKAllocator(Allocator):
    config: ERKConfig

    def allocate(self, layers, weights, rate, context=None):
        power = float(self.config.power)
        dens = erk_densities({layer.name: layer.shape for layer in layers}, rate, power)
        return {n: 1.0 - d for n, d in dens.items()}
