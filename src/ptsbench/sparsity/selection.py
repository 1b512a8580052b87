"""Turning scores into masks with exact counts (docs/methods.md#prunable-layers-and-masks).

The allocator fixes how many weights layer l loses, k_l = floor(s_l * N_l); a criterion gives
every weight a score and the lowest k_l scores are pruned, ties broken by index (stable sort),
so the count is exact whatever the scores. Comparison groups:
- ``layer``: the lowest k_l over the whole layer;
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

import torch

GROUPS = ("layer", "row")


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


def keep_mask(scores: torch.Tensor, k: int, group: str = "layer") -> torch.Tensor:
    """Keep-mask shaped like ``scores`` (a weight) with exactly ``k`` False entries."""
    if group == "layer":
        prune = prune_lowest(scores.reshape(1, -1), k)
    else:
        rows = scores.reshape(scores.shape[0], -1)
        prune = prune_lowest(rows, spread(k, [rows.shape[1]] * rows.shape[0]))
    return (~prune).reshape(scores.shape)


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
