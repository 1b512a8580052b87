"""AlphaPruning allocation (Lu et al., NeurIPS 2024, "AlphaPruning: Using Heavy-Tailed Self
Regularization Theory for Improved Layer-wise Pruning of Large Language Models"). Data-free.

Rule: per layer, the empirical spectral density (ESD) of W^T W, i.e. the squared singular values of
the weight as a matrix (a conv: out x in*kh*kw, its GEMM view). Fit a power law p(x) ~ x^-alpha to the
ESD's tail with the Hill estimator
    alpha = 1 + n / sum_{i >= k} ln(lambda_i / lambda_k),   lambda ascending, n = N - k,
taking xmin = lambda_k at the median eigenvalue, k = floor(N / 2). Heavy-Tailed Self-Regularization
reads a low alpha (heavy tail) as a well-trained layer, which is pruned less. The alphas are mapped
linearly onto [1 - eps, 1 + eps] (lowest alpha at 1 - eps) and multiplied by the one factor that
makes the parameter-weighted global rate exactly S, so s_l spans S * [1 - eps, 1 + eps] up to that
factor, as in the paper's phi(q)_i = eta ((q_i - q_min) / (q_max - q_min) (s2 - s1) + s1) with
s1, s2 = 1 -+ eps. Counts are exact (exact_counts.py); a rate at which some layer would reach 1 is
refused.

xmin: the reference code offers a KS-distance search (its LLM default, 'alpha_peak': xmin near the
peak of a 100-bin log histogram) and the median ('alpha_mid', the default of its ConvNeXt/ViT/DeiT
script, image_classifiers/main.py). We take the median, as the vision experiments do: it needs no
bin count, and the small vision layers here have 9 to a few hundred eigenvalues, too few for a
stable KS search. eps: 0.2, the default of that same script (``--epsilon 0.2``).

Convs: the reference flattens a conv per kernel position (kh*kw matrices out x in, their eigenvalues
pooled); we use the GEMM view out x in*kh*kw, the matrix the layer actually applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ...schemas import knob
from .base import ALLOCATORS, Allocator, AllocatorConfig
from .exact_counts import exact_rates


@dataclass(frozen=True)
class AlphaPruningConfig(AllocatorConfig):
    eps: float = knob(0.2, ge=0, lt=1)  # rates span S * [1 - eps, 1 + eps] before rescaling (paper, vision: 0.2)


def esd(weight: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of W^T W (ascending, float64) for W the weight as (out, everything else)."""
    w = weight.detach().double().reshape(weight.shape[0], -1)
    return torch.linalg.svdvals(w).pow(2).sort().values


def hill_alpha(eigs: torch.Tensor) -> float:
    """Hill estimate of the ESD's power-law exponent over the eigenvalues from the median up
    (``eigs`` ascending). inf when that tail is flat (all equal), nan when there is none."""
    eigs = eigs[eigs > 0]
    if eigs.numel() < 2:
        return math.nan
    k = eigs.numel() // 2
    tail = eigs[k:].log()
    spread = float((tail - tail[0]).sum())
    return 1.0 + tail.numel() / spread if spread > 0 else math.inf


def alpha_rates(alphas: dict[str, float], numels: dict[str, int], rate: float, eps: float) -> dict[str, float]:
    """Real-valued AlphaPruning rates (lower alpha, lower rate), parameter-weighted mean exactly ``rate``.
    A layer without a finite alpha gets the largest finite one (no evidence of a heavy tail)."""
    finite = [a for a in alphas.values() if math.isfinite(a)]
    if not finite:
        return {n: float(rate) for n in alphas}
    lo, hi = min(finite), max(finite)
    a = {n: v if math.isfinite(v) else hi for n, v in alphas.items()}
    if hi - lo <= 0:
        return {n: float(rate) for n in alphas}
    ratio = {n: (v - lo) / (hi - lo) * 2 * eps + 1 - eps for n, v in a.items()}
    total = sum(numels[n] for n in alphas)
    eta = rate * total / sum(numels[n] * r for n, r in ratio.items())
    out = {n: eta * r for n, r in ratio.items()}
    bad = next((n for n, s in out.items() if s >= 1.0), None)
    if bad is not None:
        # the top layer's rate is S (1 + eps) / (1 - eps + 2 eps u), u = the weighted mean of the
        # normalised alphas: below 1 exactly when eps < (1 - S) / (1 + S - 2 u)
        u = sum(numels[n] * (r - 1 + eps) / (2 * eps) for n, r in ratio.items()) / total
        limit = (1 - rate) / (1 + rate - 2 * u)
        raise ConfigError(
            f"allocator.eps={eps:g} with sparsity.rate={rate:g}: AlphaPruning would prune layer {bad} at "
            f"{out[bad]:.3f} (>= 1); pass allocator.eps below {limit:.3f} or lower sparsity.rate"
        )
    return out


@ALLOCATORS.register("alphapruning", config=AlphaPruningConfig, label="AlphaPruning", order=11)
class AlphaPruningAllocator(Allocator):
    config: AlphaPruningConfig

    def allocate(self, layers, weights, rate, context=None):
        eps = float(self.config.eps)
        alphas = {layer.name: hill_alpha(esd(weights[layer.name])) for layer in layers}
        numels = {layer.name: layer.numel for layer in layers}
        rates = exact_rates(alpha_rates(alphas, numels, rate, eps), numels, rate)
        if context is not None:
            context.report.update(
                {
                    "alpha": {n: a if math.isfinite(a) else None for n, a in alphas.items()},
                    "eps": eps,
                    "xmin": "median eigenvalue",
                }
            )
        return rates
