"""Turning scores into masks with exact counts (docs/methods.md#prunable-layers-and-masks).

The allocator fixes how many weights layer l loses, k_l = floor(s_l * N_l); a criterion gives
every weight a score and the lowest k_l scores are pruned, ties broken by index (stable sort),
so the count is exact whatever the scores. Comparison groups:
- ``layer``: the lowest k_l over the whole layer;
- ``row``: per output row (Wanda's default); k_l is spread over the rows by cumulative rounding,
  so every row loses floor or ceil of k_l / rows and the layer total is still exactly k_l;
- N:M: in every M consecutive weights along the GEMM input dimension the M-N lowest go.
"""

from __future__ import annotations

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


def nm_fits(cols: int, m: int) -> bool:
    return cols % m == 0


def nm_keep_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the N highest of every M consecutive scores along each row's flattened input dim
    (for a conv weight (O, C/g, kH, kW): the (c, kh, kw) order of the GEMM view)."""
    groups = scores.reshape(-1, m)
    return (~prune_lowest(groups, m - n)).reshape(scores.shape)
