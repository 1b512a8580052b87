"""The overall metrics of the five PTSBench tracks (paper §3, Eqs. 2-8; docs/methods.md#track-metrics).

Every track reduces run results to *relative scores* and then takes a quadratic mean
(root mean square), so one collapsed setting weighs more than in an arithmetic mean but
cannot dominate. The mean keeps the sign (:func:`signed_quadratic_mean`): sgn(m) * sqrt(|m|)
with m = mean(x * |x|), the paper's root mean square whenever every value is >= 0 (so every
paper row below is unchanged) and negative when harm dominates, as a reconstruction that
hurts must not score like one that helps. All functions work on plain fractions (1.0 = the dense model); the tables
print them x100 like the paper. Inputs are already grouped: ``E(.)`` in the paper is the
mean over the runs of one cell (models, datasets, seeds at one rate), done by the caller
with :func:`mean`.

Worked examples (paper numbers, x100):

>>> round(om_alloc([0.7288, 0.8094, 0.1640]) * 100, 2)      # Table 2, Uniform
63.59
>>> round(om_arch([0.9938, 0.9786, 0.9138, 0.4836]) * 100, 2)  # Table 6, ResNet
86.81

The paper's own Table 2 MS column is not the quadratic mean of its printed per-rate means
(Uniform CLS 96.94, 84.52, 65.67, 32.55 gives 74.02, the table says 72.88); docs/methods.md#track-metrics pins
the rule used here: MS = quadratic mean over rates of the per-rate means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "relative_score",
    "recon_gain",
    "mean",
    "quadratic_mean",
    "signed_quadratic_mean",
    "ms",
    "om_alloc",
    "om_recon",
    "om_arch",
    "g_size",
    "om_robust",
    "om_task",
]


def _finite(values: Mapping[Any, float] | Iterable[float]) -> list[float]:
    """The finite values of a sequence, or of a mapping's values (e.g. ``{rate: mean}``)."""
    if isinstance(values, Mapping):
        values = values.values()
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def relative_score(sparse: float, dense: float, higher_is_better: bool = True) -> float:
    """A_s / A_dense for accuracy-like metrics (CLS top-1, DET mAP); A_dense / A_s for
    lower-is-better ones (GEN FID), so 1.0 always means "as good as dense" (Eq. 2).

    >>> round(relative_score(0.72, 0.80), 6)
    0.9
    >>> relative_score(sparse=20.0, dense=5.0, higher_is_better=False)   # FID 5 -> 20
    0.25
    >>> math.isnan(relative_score(0.5, 0.0))
    True
    """
    num, den = (sparse, dense) if higher_is_better else (dense, sparse)
    return float(num) / float(den) if den else math.nan


def recon_gain(recon: float, none: float, dense: float, higher_is_better: bool = True) -> float:
    """One run's reconstruction term of Eq. 4, with R = A_{s,r} - A_s (Eq. 3): the gain of the
    reconstructed sparse model over the same sparse model without reconstruction.

    Accuracy-like metrics: R / A_dense. Lower-is-better metrics (GEN FID), bounded as docs/methods.md#decisions
    decides: exp(A_dense / R) when reconstruction lowered FID (R < 0, a term in (0, 1) that
    grows with the improvement), 0 when it did not (R >= 0). The paper's literal exp(A/R) is
    inf for a tiny worsening (R = +0.01, A = 5: e^500), which no mean survives.

    >>> round(recon_gain(recon=0.70, none=0.40, dense=0.75), 4)    # 30 points back of 75
    0.4
    >>> round(recon_gain(recon=10.0, none=30.0, dense=5.0, higher_is_better=False), 4)  # exp(5/-20)
    0.7788
    >>> recon_gain(recon=30.01, none=30.0, dense=5.0, higher_is_better=False)   # FID got worse
    0.0
    """
    r = float(recon) - float(none)
    if higher_is_better:
        return r / float(dense) if dense else math.nan
    if math.isnan(r) or math.isnan(float(dense)):
        return math.nan
    if r >= 0.0:
        return 0.0
    return math.exp(max(float(dense) / r, -745.0))  # A/R < 0: the term lies in [0, 1)


def mean(values: Mapping[Any, float] | Iterable[float]) -> float:
    """E(.): arithmetic mean over the runs of one cell, NaN-free; NaN when empty.

    >>> round(mean([0.9, 0.8, float("nan")]), 6)
    0.85
    """
    vals = _finite(values)
    return sum(vals) / len(vals) if vals else math.nan


def quadratic_mean(values: Mapping[Any, float] | Iterable[float]) -> float:
    """sqrt(mean(v^2)) over the finite values (of a mapping: its values); NaN when there are none.

    >>> quadratic_mean([3.0, 4.0]) == math.sqrt(12.5)
    True
    """
    vals = _finite(values)
    return math.sqrt(sum(v * v for v in vals) / len(vals)) if vals else math.nan


def signed_quadratic_mean(values: Mapping[Any, float] | Iterable[float]) -> float:
    """sgn(m) * sqrt(|m|) with m = mean(v * |v|) over the finite values: the quadratic mean when
    every value is >= 0, and a value that keeps the sign of the squares' balance otherwise
    (a gain of -0.3 and one of +0.3 no longer score alike). NaN when there are none.

    >>> signed_quadratic_mean([3.0, 4.0]) == quadratic_mean([3.0, 4.0])
    True
    >>> round(signed_quadratic_mean([-0.3]), 6), round(signed_quadratic_mean([0.1, -0.3]), 6)
    (-0.3, -0.2)
    """
    vals = _finite(values)
    if not vals:
        return math.nan
    m = sum(v * abs(v) for v in vals) / len(vals)
    return math.copysign(math.sqrt(abs(m)), m)


def ms(per_rate_means: Mapping[float, float] | Iterable[float]) -> float:
    """MS of one task in Tables 2/3: signed quadratic mean over sparsity rates of E(relative score)
    (Table 3: of E(gain); a reconstruction that hurts on average has a negative MS).

    >>> round(ms({0.5: 0.9694, 0.6: 0.8452, 0.7: 0.6567, 0.8: 0.3255}) * 100, 2)
    74.02
    >>> round(ms({0.5: -0.03, 0.7: 0.01}) * 100, 2)   # hurt by 3 points, helped by 1: net harm
    -2.0
    """
    return signed_quadratic_mean(per_rate_means)


def om_alloc(ms_per_task: Mapping[str, float] | Iterable[float]) -> float:
    """OM_alloc (Eq. 2) = sqrt(mean over tasks of MS_task^2); missing tasks are left out.

    >>> round(om_alloc({"cls": 0.7288, "det": 0.8094, "gen": 0.1640}) * 100, 2)
    63.59
    >>> round(om_alloc({"cls": 0.9455, "det": 0.9676, "gen": 0.9171}) * 100, 2)  # FCPTS (ERK)
    94.36
    """
    return signed_quadratic_mean(ms_per_task)


def om_recon(ms_per_task: Mapping[str, float] | Iterable[float]) -> float:
    """OM_recon (Eq. 4): the same signed quadratic mean over tasks, of the MS of reconstruction gains;
    a technique whose harm outweighs its help scores < 0 (the paper's squares would hide that).

    >>> round(om_recon({"cls": 0.3668, "det": 0.0373, "gen": 0.8832}) * 100, 2)  # w/ Correction
    55.26
    """
    return signed_quadratic_mean(ms_per_task)


def om_arch(per_rate_means: Mapping[float, float] | Iterable[float]) -> float:
    """OM_arch (Eq. 5): sqrt(1/C sum over the C rates of E^2(A^s/A)), E over one family's sizes.

    >>> round(om_arch({0.5: 0.9938, 0.6: 0.9786, 0.7: 0.9138, 0.8: 0.4836}) * 100, 2)
    86.81
    """
    return signed_quadratic_mean(per_rate_means)


def g_size(per_rate_means: Mapping[float, float] | Iterable[float]) -> float:
    """G_size (Eq. 6): Eq. 5 restricted to one model size.

    >>> round(g_size([1.0, 0.5]), 6) == round(math.sqrt(0.625), 6)
    True
    """
    return signed_quadratic_mean(per_rate_means)


def om_robust(g_sizes: Mapping[str, float] | Iterable[float]) -> float:
    """OM_robust (Eq. 7) = population standard deviation of G_size over a family's sizes (lower
    is better). Pass G_size on the scale you print (the tables use x100). A family with fewer
    than two sizes has no spread to measure: NaN, not a misleading 0.

    >>> round(om_robust([90.0, 80.0, 70.0]), 4)
    8.165
    >>> math.isnan(om_robust([88.0]))
    True
    """
    vals = _finite(g_sizes)
    if len(vals) < 2:
        return math.nan
    mu = sum(vals) / len(vals)
    return math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))


def om_task(per_rate_means: Mapping[float, float] | Iterable[float]) -> float:
    """OM_task (Eq. 8): quadratic mean over rates of E(relative score), E over a task's models.

    >>> round(om_task([0.9824, 0.9568, 0.8617, 0.5253]) * 100, 2)
    85.13
    """
    return signed_quadratic_mean(per_rate_means)
