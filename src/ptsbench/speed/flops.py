"""Theoretical FLOP reduction of a pruned model: what sparsity would save if every zero were skipped.

A prunable layer does one multiply-accumulate per weight per output position: a conv's positions
are its output pixels Ho x Wo, a Linear's are the tokens it is applied to (1 for a classifier
head), per sample. So its dense MACs are numel(W) x positions and its sparse MACs are
nnz(W) x positions; the reduction is the ratio of the sums over the prunable layers. Layers that
hold no weights (attention's matmuls, pooling, norms) are not counted, and no kernel skips every
zero: the figure is a bound on what a sparse kernel could gain, not a measured speed-up
(latency.py measures that).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..sparsity.layers import PrunableLayer


def flop_counts(nonzeros: dict[str, int], numel: dict[str, int], positions: dict[str, int]) -> dict[str, float]:
    """Dense and sparse MACs per sample summed over the layers of ``positions``, and their ratio
    (``reduction``: dense / sparse, 1.0 when nothing is pruned, inf when every weight is)."""
    dense = sum(numel[n] * p for n, p in positions.items())
    sparse = sum(nonzeros[n] * p for n, p in positions.items())
    return {"dense": dense, "sparse": sparse, "reduction": dense / sparse if sparse else math.inf}


def from_sparsity(achieved_per_layer: dict[str, float], numel: dict[str, int], positions: dict[str, int]) -> dict:
    """flop_counts from a record's achieved per-layer sparsity (fraction of zeros)."""
    nonzeros = {n: round(numel[n] * (1.0 - achieved_per_layer[n])) for n in positions}
    return flop_counts(nonzeros, numel, positions)


@torch.no_grad()
def output_positions(modules: dict[str, PrunableLayer], run_forward) -> dict[str, int]:
    """Output positions of each layer in ``modules`` over one ``run_forward()`` (give it one sample):
    outputs / output channels, summed over the calls of a layer called several times (a shared head
    over pyramid levels)."""
    seen: dict[str, int] = {}

    def hook(name):
        def count(mod, _args, out):
            width = mod.out_channels if isinstance(mod, nn.Conv2d) else mod.out_features
            seen[name] = seen.get(name, 0) + out.numel() // width

        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    try:
        run_forward()
    finally:
        for h in handles:
            h.remove()
    return seen


def model_flops(model: nn.Module, modules: dict[str, PrunableLayer], forward, inputs: torch.Tensor) -> dict | None:
    """A record's ``flops``: dense/sparse MACs per sample, the theoretical reduction and each layer's
    output positions, from ``forward(model, inputs[:1])``; None when there is no input to run (a
    diffusion run that captured no UNet inputs)."""
    if len(inputs) == 0:
        return None
    device = next(model.parameters()).device
    positions = output_positions(modules, lambda: forward(model, inputs[:1].to(device)))
    numel = {n: m.weight.numel() for n, m in modules.items()}
    nonzeros = {n: int((m.weight != 0).sum()) for n, m in modules.items()}
    return {**flop_counts(nonzeros, numel, positions), "positions": positions}
