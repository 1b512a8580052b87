"""When a comparison may say 'holds' or 'fails' (findings.md) or order two entries (Table 5).

Rule (docs/methods.md#evidence): a comparison rests on the models behind its estimate, per
stratum (task, or family in Table 6). It earns a verdict only when every stratum it pools has at
least ``min_models`` independent models (3 by default: ``ptsbench-aggregate --min-models``) *and*
its 95% interval excludes the threshold with a non-zero width. Otherwise the verdict is 'not
enough evidence' and the reason says which: too few models ('1 GEN model', '2 ViT sizes (1 size
pair)'), an interval that spans the threshold, or a zero-width interval. The same rule decides
whether Table 5 may print an order ('>') or must print a tie ('≈').
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .evidence import Estimate, Plan, interval, n_models

HOLDS, FAILS, UNKNOWN = "holds", "fails", "not enough evidence"
MIN_MODELS = 3


@dataclass
class Judgement:
    verdict: str
    ci: tuple[float, float] = (math.nan, math.nan)
    reason: str = ""
    n_models: dict[str, int] = field(default_factory=dict)


def too_few(counts: dict[str, int], min_models: int, unit: str = "model") -> str:
    """'' when every stratum has enough models, else the reason ('1 GEN model; 2 DET models')."""
    if not counts:
        return "no models"
    low = [(s, n) for s, n in counts.items() if n < min_models]
    if not low:
        return ""
    parts = [
        f"{n} {s} {unit}{'' if n == 1 else 's'}" + (" (1 size pair)" if unit == "size" and n == 2 else "")
        for s, n in low
    ]
    return f"{', '.join(parts)}: needs {min_models} per {'family' if unit == 'size' else 'task'}"


def models_text(counts: dict[str, int], unit: str = "model") -> str:
    """The models an estimate rests on, per task: 'CLS 7 models', 'CLS 7, GEN 1 models'."""
    if not counts:
        return f"no {unit}s"
    plural = "" if len(counts) == 1 and next(iter(counts.values())) == 1 else "s"
    return ", ".join(f"{s} {n}" for s, n in counts.items()) + f" {unit}{plural}"


def judge(
    plan: Plan, est: Estimate, min_models: int = MIN_MODELS, unit: str = "model", tolerance: float | None = None
) -> Judgement:
    """Directional (``tolerance`` None): holds when the interval lies above 0, fails below 0.
    Equivalence: holds when it lies within ±tolerance, fails when it lies wholly outside."""
    counts = n_models(plan, est)
    ci = interval(plan, est)
    out = Judgement(UNKNOWN, ci, "", counts)
    if not math.isfinite(est.value):
        out.reason = "no value"
        return out
    out.reason = too_few(counts, min_models, unit)
    if out.reason:
        return out
    lo, hi = ci
    if math.isnan(lo):
        out.reason = "no interval"
    elif hi - lo <= 0:
        out.reason = "zero-width interval"
    elif tolerance is None:
        out.verdict = HOLDS if lo > 0 else FAILS if hi < 0 else UNKNOWN
        out.reason = "" if out.verdict != UNKNOWN else "interval spans 0"
    else:
        inside, outside = -tolerance <= lo and hi <= tolerance, lo > tolerance or hi < -tolerance
        out.verdict = HOLDS if inside else FAILS if outside else UNKNOWN
        out.reason = "" if out.verdict != UNKNOWN else f"interval crosses ±{tolerance:g}"
    return out


def significant(plan: Plan, diff: Estimate, min_models: int = MIN_MODELS, unit: str = "model") -> bool:
    """Whether a difference may be printed as an order (else a tie)."""
    return judge(plan, diff, min_models, unit).verdict != UNKNOWN
