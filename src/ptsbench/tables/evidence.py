"""Model-level evidence: table values whose uncertainty comes from resampling *models*, not runs.

Rule (docs/methods.md#evidence): the model is the unit of replication. A cell first averages each
model's runs (its calibration seeds; a run that reads no calibration data counts once), then the
models. A *unit* is one model of one stratum (a task, or a family in Table 6); strata hold
different models, drawn independently. Every value a table prints or compares (a cell, an MS or
OM, the difference of two rows) is an :class:`Estimate`: its point value plus its value under
each replicate of one :class:`Plan` shared by the whole table, so the difference of two rows is
resampled *paired by model* (a replicate that leaves out ResNet-20 leaves it out of both rows).

Two plans (``kind``):
- ``jackknife`` (the default, chosen by the calibration simulation, docs/methods.md#evidence):
  replicate k leaves unit k out. Interval: value ± t * SE, with the stratified jackknife variance
  sum_h (n_h - 1)/n_h sum_k (theta_k - mean_h)^2 and Welch-Satterthwaite degrees of freedom; for a
  plain mean over models it is exactly the Student t interval. One model in a stratum: no interval.
- ``bootstrap``: replicate b reweights the models of each stratum by a multinomial draw (a cluster
  bootstrap); interval: the 2.5 and 97.5 percentiles.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

JACKKNIFE, BOOTSTRAP = "jackknife", "bootstrap"
LEVEL = 0.95
DRAWS = 2000
Unit = tuple[str, Hashable]  # (stratum, model)


@dataclass(frozen=True)
class Plan:
    """How models are resampled: ``weights[r, u]`` is unit u's weight in replicate r."""

    units: tuple[Unit, ...]
    weights: np.ndarray
    kind: str = JACKKNIFE
    column: dict = field(default_factory=dict, compare=False)  # unit -> index, filled on creation

    def __post_init__(self):
        self.column.update({u: i for i, u in enumerate(self.units)})


@dataclass(frozen=True)
class Estimate:
    """A point value, its value under each replicate of the plan, and the units it rests on."""

    value: float
    reps: np.ndarray
    units: frozenset[int] = frozenset()
    n_runs: int = 0


def make_plan(units: Iterable[Unit], kind: str = JACKKNIFE, draws: int = DRAWS) -> Plan:
    """The plan over the given units (sorted, de-duplicated): leave-one-out, or a cluster bootstrap
    seeded by the unit names (the same records give the same intervals)."""
    units = tuple(sorted(set(units), key=str))
    n = len(units)
    if kind == JACKKNIFE:
        return Plan(units, np.ones((n, n)) - np.eye(n), JACKKNIFE)
    if kind != BOOTSTRAP:
        raise ValueError(f"interval method '{kind}'; valid choices: {JACKKNIFE}, {BOOTSTRAP}")
    seed = int(hashlib.sha256(repr(units).encode()).hexdigest()[:12], 16)
    rng = np.random.default_rng(seed)
    weights = np.zeros((draws, n))
    for stratum in sorted({s for s, _ in units}, key=str):
        idx = [i for i, (s, _) in enumerate(units) if s == stratum]
        weights[:, idx] = rng.multinomial(len(idx), [1.0 / len(idx)] * len(idx), size=draws)
    return Plan(units, weights, BOOTSTRAP)


def missing(plan: Plan) -> Estimate:
    return Estimate(math.nan, np.full(len(plan.weights), math.nan))


def cell(plan: Plan, unit_values: Mapping[Unit, float], n_runs: int = 0) -> Estimate:
    """The mean over units of their (model-level) values; NaN where a replicate keeps none."""
    vals = {u: float(v) for u, v in unit_values.items() if v is not None and math.isfinite(float(v))}
    if not vals:
        return missing(plan)
    idx = [plan.column[u] for u in vals]
    v = np.array(list(vals.values()))
    w = plan.weights[:, idx]
    total = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.where(total > 0, w @ v / np.where(total > 0, total, 1.0), np.nan)
    return Estimate(float(v.mean()), reps, frozenset(idx), n_runs)


def combine(fn: Callable, *ests: Estimate) -> Estimate:
    """fn applied to the point values and, replicate by replicate, to the replicates (fn must
    accept floats and numpy arrays alike); rests on the union of the operands' units."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        value = float(fn(*(e.value for e in ests)))
        reps = np.asarray(fn(*(e.reps for e in ests)), dtype=float)
    units = frozenset().union(*(e.units for e in ests))
    return Estimate(value, reps, units, sum(e.n_runs for e in ests))


def signed_qmean(plan: Plan, ests: list[Estimate]) -> Estimate:
    """The signed quadratic mean (``metrics.signed_quadratic_mean``) of the estimates that have a
    value; a replicate in which one of them is undefined is undefined (no silent re-weighting)."""
    ests = [e for e in ests if math.isfinite(e.value)]
    if not ests:
        return missing(plan)

    def fn(*xs):
        m = sum(x * np.abs(x) for x in xs) / len(xs)
        return np.sign(m) * np.sqrt(np.abs(m))

    return combine(fn, *ests)


def spread(plan: Plan, ests: list[Estimate]) -> Estimate:
    """Population standard deviation over the estimates (OM_robust over a family's sizes). A
    replicate that leaves one size out takes the spread of the others; fewer than 2: undefined."""
    ests = [e for e in ests if math.isfinite(e.value)]
    if len(ests) < 2:
        return missing(plan)
    stack = np.stack([e.reps for e in ests])
    finite = np.isfinite(stack)
    count = finite.sum(axis=0)
    mean = np.where(finite, stack, 0.0).sum(axis=0) / np.maximum(count, 1)
    var = np.where(finite, (stack - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    reps = np.where(count >= 2, np.sqrt(var), np.nan)
    value = float(np.std([e.value for e in ests]))
    return Estimate(value, reps, frozenset().union(*(e.units for e in ests)), sum(e.n_runs for e in ests))


def n_models(plan: Plan, est: Estimate) -> dict[str, int]:
    """Models the estimate rests on, per stratum (in stratum order)."""
    out: dict[str, int] = {}
    for i in sorted(est.units):
        stratum = plan.units[i][0]
        out[stratum] = out.get(stratum, 0) + 1
    return out


@lru_cache(maxsize=4096)
def _t_quantile(df: float, level: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def interval(plan: Plan, est: Estimate, level: float = LEVEL) -> tuple[float, float]:
    """The estimate's interval at ``level``; (nan, nan) when it has no value or a stratum it rests
    on has a single model (jackknife), or when many replicates are undefined (bootstrap)."""
    if not math.isfinite(est.value) or not est.units:
        return math.nan, math.nan
    if plan.kind == BOOTSTRAP:
        reps = est.reps[np.isfinite(est.reps)]
        if len(reps) < 0.99 * len(est.reps):
            return math.nan, math.nan
        lo, hi = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])
        return float(lo), float(hi)
    var, df_den = 0.0, 0.0
    for idx in _by_stratum(plan, est.units).values():
        theta = est.reps[idx]
        if len(idx) < 2 or not np.isfinite(theta).all():
            return math.nan, math.nan
        v = (len(idx) - 1) / len(idx) * float(np.sum((theta - theta.mean()) ** 2))
        var, df_den = var + v, df_den + v * v / (len(idx) - 1)
    if var <= (1e-12 * max(1.0, abs(est.value))) ** 2:
        return est.value, est.value  # every model agrees exactly: a zero-width interval
    half = _t_quantile(round(var * var / df_den, 9), level) * math.sqrt(var)
    return est.value - half, est.value + half


def _by_stratum(plan: Plan, units: Iterable[int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i in sorted(units):
        out.setdefault(plan.units[i][0], []).append(i)
    return out


def scaled(est: Estimate, factor: float) -> Estimate:
    return combine(lambda x: factor * x, est)
