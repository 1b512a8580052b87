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


class TargetRateMissed(RuntimeError):
    """The masks do not prune the target global rate: the run fails (never an ok record with another rate)."""


def documented_pruned(
    rate: float, numels: dict[str, int], masked: dict[str, tuple[int, ...]], nm: tuple[int, int] | None
) -> tuple[float, float]:
    """(weights the masks must prune, the per-layer rounding allowed around it) over every prunable layer
    (``numels``; the masked ones ``masked``, by shape). Unstructured: ``rate`` of the total, each masked
    layer rounding its count down by less than one weight. N:M: exactly 1 - N/M of every fitting masked
    layer, misfit (and excluded) layers dense."""
    if nm is None:
        return rate * sum(numels.values()), len(masked) + 1.0
    n, m = nm
    fitting = sum(numels[name] for name, shape in masked.items() if len(shape) >= 2 and shape[1] % m == 0)
    return fitting * (m - n) / m, 0.5


def check_masked_rate(
    rate: float, numels: dict[str, int], masks: dict, nm: tuple[int, int] | None, allocator: str
) -> dict[str, float]:
    """The masked global rate against the documented one (:func:`documented_pruned`); raises
    :class:`TargetRateMissed` naming target, achieved and tolerance, else returns them for the record."""
    total = sum(numels.values())
    pruned = sum(int(mask.numel() - int(mask.bool().sum())) for mask in masks.values())
    expected, slack = documented_pruned(rate, numels, {k: tuple(v.shape) for k, v in masks.items()}, nm)
    achieved, target = pruned / max(total, 1), expected / max(total, 1)
    tolerance = slack / total if total else 0.0
    report = {"masked": achieved, "documented": target, "tolerance": tolerance}
    if abs(pruned - expected) > (slack if total else 0.0) or (total == 0 and rate > 0):
        why = (
            "no prunable weight is left (prune.keep_dense / the adapter's dense layers cover every layer)"
            if total == 0
            else f"the per-layer rates of allocator={allocator} do not add up to it"
        )
        pattern = f" (sparsity=nm {nm[0]}:{nm[1]}, misfit layers dense)" if nm else ""
        raise TargetRateMissed(
            f"achieved sparsity {achieved:.6f} after masking, target {target if total else rate:.6f}{pattern} "
            f"(sparsity.rate={rate:g}), tolerance {tolerance:.2g} (the per-layer rounding): {why}"
        )
    return report


def check_kept_zeros(zeros: int, total: int, after_masking: dict[str, float]) -> None:
    """After reconstruction: the pruned weights are still exact zeros (a weight the checkpoint already
    had at zero may add to them); fewer zeros than masked means the run no longer has its target rate."""
    if zeros + after_masking["tolerance"] * total < after_masking["documented"] * total - 0.5:
        raise TargetRateMissed(
            f"achieved sparsity {zeros / max(total, 1):.6f} after reconstruction, target "
            f"{after_masking['documented']:.6f}, tolerance {after_masking['tolerance']:.2g}: pruned weights "
            "were changed after masking"
        )
