"""L2Norm allocation (paper §2.2, criterion strategy; Han et al. 2015), docs/methods.md#allocators.

Rule: score every weight by |w| / ||W_l||_F (its magnitude normalised by the Frobenius norm of
its layer), prune the floor(S * N_total) lowest scores globally, and read each layer's rate off
as the fraction of its weights below that global threshold.

The global k-th score is found by bisection over per-layer sorted scores, never by sorting
one concatenated tensor of the whole model; ties at the threshold are shared out in layer
order so the count is exact.
"""

from __future__ import annotations

import math

import torch

from .base import ALLOCATORS, Allocator, AllocatorConfig


def _count_le(sorted_scores: list[torch.Tensor], t: float) -> int:
    tt = torch.tensor([t], dtype=torch.float64)
    return sum(int(torch.searchsorted(s, tt, right=True)) for s in sorted_scores)


def kth_smallest(sorted_scores: list[torch.Tensor], k: int) -> float:
    """The k-th smallest value (1-based) of the union of sorted 1-D float64 tensors."""
    lo = min(float(s[0]) for s in sorted_scores)
    hi = max(float(s[-1]) for s in sorted_scores)
    if _count_le(sorted_scores, lo) >= k:
        return lo
    # invariant: count(<= lo) < k <= count(<= hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _count_le(sorted_scores, mid) >= k:
            hi = mid
        else:
            lo = mid
    # the answer is the smallest stored value strictly above lo
    nxt = []
    tt = torch.tensor([lo], dtype=torch.float64)
    for s in sorted_scores:
        i = int(torch.searchsorted(s, tt, right=True))
        if i < s.numel():
            nxt.append(float(s[i]))
    return min(nxt)


@ALLOCATORS.register("l2norm", config=AllocatorConfig, label="L2Norm", order=1)
class L2NormAllocator(Allocator):
    def allocate(self, layers, weights, rate, context=None):
        names = [layer.name for layer in layers]
        sorted_scores = []
        for n in names:
            w = weights[n].detach().double().flatten().abs()
            norm = w.norm()
            s = w / norm if norm > 0 else w
            sorted_scores.append(torch.sort(s.cpu()).values)
        total = sum(s.numel() for s in sorted_scores)
        k = int(math.floor(rate * total + 1e-9))
        if k == 0:
            return {n: 0.0 for n in names}
        t = kth_smallest(sorted_scores, k)
        tt = torch.tensor([t], dtype=torch.float64)
        below = [int(torch.searchsorted(s, tt, right=False)) for s in sorted_scores]
        at = [int(torch.searchsorted(s, tt, right=True)) - b for s, b in zip(sorted_scores, below)]
        remaining = k - sum(below)
        counts = []
        for b, a in zip(below, at):
            take = min(a, remaining)
            remaining -= take
            counts.append(b + take)
        return {n: c / s.numel() for n, c, s in zip(names, counts, sorted_scores)}
