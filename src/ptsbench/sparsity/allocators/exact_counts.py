"""Exact per-layer counts for allocators whose rule yields real-valued layer rates (OWL, AlphaPruning).

Rule: layer l's rate s_l becomes the count floor(s_l N_l) (the mask phase's rule); those floors fall
short of the global target floor(S N) by less than one weight per layer, and the shortfall is handed
out by FCPTS's projection (one common scale factor, then the largest remainders first, never a whole
layer), so sum_l k_l = floor(S N) exactly. Each count is turned back into the float rate that the
mask phase floors to exactly that count.
"""

from __future__ import annotations

from ..selection import num_pruned
from .fcpts import project_counts, rate_for_count


def exact_rates(rates: dict[str, float], numels: dict[str, int], rate: float) -> dict[str, float]:
    """Rates whose per-layer counts sum to floor(rate * total) and stay within a weight of ``rates``."""
    names = list(rates)
    sizes = [numels[n] for n in names]
    counts = [num_pruned(min(max(rates[n], 0.0), 1.0), m) for n, m in zip(names, sizes)]
    final = project_counts(counts, sizes, num_pruned(rate, sum(sizes)))
    return {n: rate_for_count(k, m) for n, k, m in zip(names, final, sizes)}
