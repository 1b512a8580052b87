"""The global budget when some layers are kept dense (``prune.exclude``, see docs/methods.md#prunable-layers).

The global rate S is parameter-weighted over every prunable layer, excluded ones included:
excluded layers stay dense yet count in the total, so the layers that are pruned carry the
whole budget, ``S * N_all / N_included``. A rate that cannot be met that way (the included
layers would have to be pruned entirely or more) is a config error naming both knobs.
"""

from __future__ import annotations

from ..errors import ConfigError


def rate_over_included(rate: float, total_weights: int, included_weights: int) -> float:
    """The rate the allocator spreads over the included layers so that the global rate is ``rate``."""
    inner = rate * total_weights / max(included_weights, 1)
    if inner >= 1.0:
        raise ConfigError(
            f"sparsity.rate={rate} cannot be met while prune.exclude keeps "
            f"{total_weights - included_weights} of {total_weights} weights dense; "
            f"exclude fewer layers or lower the rate"
        )
    return inner
