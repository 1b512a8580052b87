"""Exact magnitude masks (docs/methods.md#prunable-layers-and-masks).

Layer l at rate s_l loses exactly floor(s_l * N_l) weights: the smallest |w|, ties broken by
flat index (a stable sort), so the same weights and rate always give the same mask.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def num_pruned(rate: float, numel: int) -> int:
    # the tiny epsilon absorbs float error such as 0.7 * 10 = 6.999999999
    return min(numel, int(math.floor(rate * numel + 1e-9)))


def magnitude_mask(weight: torch.Tensor, rate: float) -> torch.Tensor:
    """Boolean keep-mask with exactly floor(rate * numel) False entries at the smallest |w|.

    One O(N) selection (kthvalue) instead of a full sort, so ViT-L-sized layers mask quickly;
    weights tied with the k-th magnitude are pruned in flat-index order, exactly what a stable
    argsort would give.
    """
    flat = weight.detach().abs().flatten()
    n = flat.numel()
    k = num_pruned(rate, n)
    if k == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    if k == n:
        return torch.zeros_like(weight, dtype=torch.bool)
    thr = torch.kthvalue(flat, k).values
    prune = flat < thr
    missing = k - int(prune.sum())
    if missing > 0:
        tied = torch.nonzero(flat == thr, as_tuple=False).flatten()[:missing]
        prune[tied] = True
    return (~prune).view_as(weight)


@torch.no_grad()
def apply_masks(modules: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        modules[name].weight.masked_fill_(~mask.to(modules[name].weight.device).bool(), 0.0)  # NaN*0 is NaN


def masks_for(modules: dict[str, nn.Module], rates: dict[str, float]) -> dict[str, torch.Tensor]:
    return {n: magnitude_mask(modules[n].weight, rates[n]) for n in rates}


@torch.no_grad()
def measure_sparsity(modules: dict[str, nn.Module]) -> dict:
    """Achieved sparsity from exact zeros: per layer and parameter-weighted global over ``modules``
    (the prunable set, excluded layers included so the global rate is over the same total)."""
    per_layer, zeros, total = {}, 0, 0
    for name, m in modules.items():
        z = int((m.weight == 0).sum())
        n = m.weight.numel()
        per_layer[name] = z / n
        zeros += z
        total += n
    return {"global": zeros / max(total, 1), "zeros": zeros, "total": total, "per_layer": per_layer}
