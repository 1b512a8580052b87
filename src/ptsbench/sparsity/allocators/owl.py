"""OWL allocation (Yin et al., ICML 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret
Sauce for Pruning LLMs to High Sparsity").

Rule: score every weight by the Wanda score A_ij = |W_ij| * ||X_j||_2 on the dense model's calibration
inputs (GEMM view, sparsity/gemm.py). A layer's outlier ratio D_l is the fraction of its scores above
M times their mean. Layers with more outliers are pruned less: the ratios are mapped linearly onto
[S - lambda, S + lambda] (the layer with the most outliers at S - lambda), then shifted by one common
amount so that the parameter-weighted global rate is exactly S (the reference centres the densities
the same way, by their mean over equally sized layers). Counts are exact (exact_counts.py).

Deviation from the reference, which computes one ratio per transformer block (all its Linears
together): here every prunable layer has its own ratio, since CNNs have no common block layout.
A layer the calibration forward never reaches is scored by |W| alone and listed in the record.
A rate the shifted mapping cannot reach (some layer outside [0, 1)) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ...schemas import knob
from ..criteria import ScoreContext
from ..criteria.wanda import input_sq_norms
from .base import ALLOCATORS, Allocator, AllocatorConfig
from .exact_counts import exact_rates


@dataclass(frozen=True)
class OWLConfig(AllocatorConfig):
    m: float = knob(5.0, gt=0, le=1000)  # an outlier scores above m x the layer's mean score (reference: 5)
    lam: float = knob(0.08, ge=0, lt=1)  # layer rates span [S - lam, S + lam] before the shift (reference: 0.08)


def outlier_ratio(scores: torch.Tensor, m: float) -> float:
    """Fraction of ``scores`` strictly above m x their mean (0 for an all-zero layer)."""
    s = scores.detach().double().flatten()
    return float((s > m * s.mean()).double().mean()) if s.numel() else 0.0


def owl_rates(ratios: dict[str, float], numels: dict[str, int], rate: float, lam: float) -> dict[str, float]:
    """Real-valued OWL rates: D_l mapped onto [S - lam, S + lam] (more outliers, lower rate), then all
    shifted so that sum_l N_l s_l = S sum_l N_l. Raises ConfigError when a layer leaves [0, 1)."""
    lo, hi = min(ratios.values()), max(ratios.values())
    if hi - lo <= 0:
        return {n: float(rate) for n in ratios}
    mapped = {n: rate + lam - 2 * lam * (d - lo) / (hi - lo) for n, d in ratios.items()}
    total = sum(numels[n] for n in ratios)
    shift = rate - sum(numels[n] * s for n, s in mapped.items()) / total
    out = {n: s + shift for n, s in mapped.items()}
    bad = next((n for n, s in out.items() if not 0.0 <= s < 1.0), None)
    if bad is not None:
        raise ConfigError(
            f"allocator.lam={lam:g} with sparsity.rate={rate:g}: OWL would prune layer {bad} at "
            f"{out[bad]:.3f}, outside [0, 1); lower allocator.lam or sparsity.rate"
        )
    return out


@ALLOCATORS.register("owl", config=OWLConfig, label="OWL", order=10, needs_calibration=True)
class OWLAllocator(Allocator):
    config: OWLConfig

    def allocate(self, layers, weights, rate, context=None):
        m, lam = float(self.config.m), float(self.config.lam)
        if not (0.0 <= rate - lam and rate + lam < 1.0):
            raise ConfigError(
                f"allocator.lam={lam:g} with sparsity.rate={rate:g}: OWL's layer rates span "
                f"[{rate - lam:g}, {rate + lam:g}], outside [0, 1); lower allocator.lam or sparsity.rate"
            )
        if context is None or context.calib_inputs is None:
            raise ConfigError(
                "allocator=owl reads calibration images; run it through the pipeline or give an "
                "AllocContext with calib_inputs"
            )
        names = [layer.name for layer in layers]
        dense = context.extras.get("dense_model", context.model)
        forward = context.forward or (lambda mod, x: mod(x))
        ctx = ScoreContext(dense_model=dense, calib_inputs=context.calib_inputs, forward=forward, device=context.device)
        sums = input_sq_norms(dense, {n: None for n in names}, ctx)
        ratios, unseen = {}, []
        for n in names:
            w = weights[n].detach()
            if n in sums:
                g = sums[n].shape[0]
                score = w.reshape(g, w.shape[0] // g, -1).abs() * sums[n].sqrt().unsqueeze(1)
            else:
                unseen.append(n)
                score = w.abs()
            ratios[n] = outlier_ratio(score, m)
        numels = {layer.name: layer.numel for layer in layers}
        rates = exact_rates(owl_rates(ratios, numels, rate, lam), numels, rate)
        context.report.update({"outlier_ratio": ratios, "m": m, "lam": lam, "unseen_layers": unseen})
        return rates
