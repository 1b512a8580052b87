"""Turning scores into masks with exact counts, applying them and counting what they pruned
(docs/methods.md#prunable-layers-and-masks).

The allocator fixes how many weights layer l loses, k_l = floor(s_l * N_l) (:func:`num_pruned`); a
criterion gives every weight a score and the lowest k_l scores are pruned, ties broken by index, so
the count is exact whatever the scores. Comparison groups:
- ``layer``: the lowest k_l over the whole layer (one O(N) kthvalue selection, no full sort, so
  ViT-L-sized layers mask quickly; ties with the k-th score pruned in flat-index order, exactly what a
  stable argsort gives);
- ``row``: per output row (Wanda's default); k_l is spread over the rows by cumulative rounding,
  so every row loses floor or ceil of k_l / rows and the layer total is still exactly k_l;
- N:M: in every group of M weights the M-N lowest go. The groups are the ones sparse tensor cores
  accept (NVIDIA ASP's layout): a Linear's M consecutive in_features; a conv's M consecutive input
  channels at one kernel position, i.e. the weight (O, C/g, kH, kW) viewed as (O, kH, kW, C/g) with
  groups along the last axis. A layer fits when its input channels per group (a Linear: in_features)
  are a multiple of M; the others stay dense (sparsity/deployable.py states what each layer can deploy).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .layers import PrunableLayer

GROUPS = ("layer", "row")


def num_pruned(rate: float, numel: int) -> int:
    """k = floor(rate * numel); the tiny epsilon absorbs float error such as 0.7 * 10 = 6.999999999."""
    return min(numel, int(math.floor(rate * numel + 1e-9)))


def spread(k: int | torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Split ``k`` (an int or a tensor of them) into integer parts proportional to ``sizes`` that
    sum to exactly ``k``: part_i = floor(k * C_i / C) - floor(k * C_{i-1} / C), C_i the cumulative
    size. Last axis of the result indexes the parts."""
    k = torch.as_tensor(k, dtype=torch.long)
    cum = torch.tensor([0, *sizes], dtype=torch.long).cumsum(0)
    edges = torch.div(k.unsqueeze(-1) * cum, cum[-1], rounding_mode="floor")
    return edges[..., 1:] - edges[..., :-1]


def prune_lowest(scores: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Boolean prune-mask of ``scores`` (B, n): True at the ``k[b]`` lowest entries of each row b,
    ties pruned in index order."""
    order = torch.sort(scores, dim=-1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    k = torch.as_tensor(k, device=scores.device).reshape(-1, 1) if torch.is_tensor(k) else k
    return ranks < k


def prune_lowest_flat(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean prune-mask of the flat ``scores``: True at the ``k`` lowest, ties pruned in index order.
    One kthvalue selection instead of a sort: the same mask as ``prune_lowest`` on one row."""
    flat = scores.detach().flatten()
    n = flat.numel()
    if k <= 0:
        return torch.zeros(n, dtype=torch.bool, device=flat.device)
    if k >= n:
        return torch.ones(n, dtype=torch.bool, device=flat.device)
    thr = torch.kthvalue(flat, k).values
    prune = flat < thr
    missing = k - int(prune.sum())
    if missing > 0:
        tied = torch.nonzero(flat == thr, as_tuple=False).flatten()[:missing]
        prune[tied] = True
    return prune


def keep_mask(scores: torch.Tensor, k: int, group: str = "layer") -> torch.Tensor:
    """Keep-mask shaped like ``scores`` (a weight) with exactly ``k`` False entries."""
    if group == "layer":
        prune = prune_lowest_flat(scores, k)
    else:
        rows = scores.reshape(scores.shape[0], -1)
        prune = prune_lowest(rows, spread(k, [rows.shape[1]] * rows.shape[0]))
    return (~prune).reshape(scores.shape)


def magnitude_mask(weight: torch.Tensor, rate: float) -> torch.Tensor:
    """Keep-mask with exactly floor(rate * numel) False entries at the smallest |w|."""
    return keep_mask(weight.detach().abs(), num_pruned(rate, weight.numel()))


def magnitude_masks(modules: dict[str, PrunableLayer], rates: dict[str, float]) -> dict[str, torch.Tensor]:
    """The magnitude mask of every layer of ``rates`` (the mask phase's default criterion, group and pattern)."""
    return {n: magnitude_mask(modules[n].weight, r) for n, r in rates.items()}


def nm_fits(shape: tuple[int, ...] | torch.Size, m: int) -> bool:
    """Whether a weight of ``shape`` (Linear (O, in), conv (O, C/g, kH, kW)) holds whole N:M groups:
    its input channels per group, ``shape[1]``, are a multiple of M (the kernel size plays no part)."""
    return len(shape) >= 2 and shape[1] % m == 0


def nm_layout(t: torch.Tensor) -> torch.Tensor:
    """``t`` (weight-shaped) as (O, positions x channels): rows are outputs, and along a row the
    input channels of one kernel position are consecutive, so N:M groups are M consecutive entries
    (a Linear is returned as it is)."""
    return t.movedim(1, -1).reshape(t.shape[0], -1)


def from_nm_layout(rows: torch.Tensor, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Inverse of :func:`nm_layout` for a weight of ``shape``."""
    moved = (shape[0], *shape[2:], shape[1])
    return rows.reshape(moved).movedim(-1, 1)


def nm_column_order(shape: tuple[int, ...] | torch.Size) -> torch.Tensor | None:
    """Permutation of a conv's GEMM columns ((c, kh, kw) order, sparsity/gemm.py) into the N:M
    layout's (kh, kw, c) order: ``cols[:, order]`` puts each kernel position's channels side by
    side. None for a Linear, whose GEMM columns are already in that order."""
    if len(shape) <= 2:
        return None
    channels, positions = shape[1], math.prod(shape[2:])
    return torch.arange(channels * positions).reshape(channels, positions).T.reshape(-1)


def nm_keep_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N highest of every M scores of the N:M layout (:func:`nm_layout`); ``scores`` is
    weight-shaped and must fit (:func:`nm_fits`)."""
    if not nm_fits(scores.shape, m):
        raise ValueError(
            f"N:M with m={m}: a weight of shape {tuple(scores.shape)} has {scores.shape[1] if scores.dim() > 1 else 0} "
            f"input channels per group, not a multiple of {m}"
        )
    groups = nm_layout(scores).reshape(-1, m)
    return from_nm_layout(~prune_lowest(groups, m - n), scores.shape)


@torch.no_grad()
def apply_masks(modules: dict[str, PrunableLayer], masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        modules[name].weight.masked_fill_(~mask.to(modules[name].weight.device).bool(), 0.0)  # NaN*0 is NaN


@torch.no_grad()
def measure_sparsity(modules: dict[str, PrunableLayer]) -> dict:
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
