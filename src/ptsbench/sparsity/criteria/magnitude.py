"""Magnitude criterion (docs/methods.md#prunable-layers-and-masks): score |w|; the smallest magnitudes are pruned first."""

from __future__ import annotations

from . import CRITERIA, Criterion


@CRITERIA.register("magnitude", label="Magnitude")
class Magnitude(Criterion):
    def scores(self, modules, context):
        return {n: m.weight.detach().abs() for n, m in modules.items()}
