"""One table cell from its runs: each model's seed-mean, their mean over models, and its tidy row.

Rule (docs/methods.md#evidence): a cell's value is the mean over models of each model's mean over
its runs (calibration seeds, and datasets when a model ran on several); a run that reads no
calibration data is one run, however many seeds its partners have. The tidy row (one line of
``tableN_*_cells.csv``) records the value, n_models, n_runs, the 95% interval and the models.
"""

from __future__ import annotations

import math

import pandas as pd

from .evidence import Estimate, Plan, Unit, cell, interval, n_models, scaled

CELL_COLUMNS = ["table", "row", "task", "column", "rate", "value", "n_models", "n_runs", "ci_low", "ci_high", "models"]


def unit_values(runs: pd.DataFrame, stratum: str, value_col: str) -> dict[Unit, float]:
    """(stratum, model) -> the model's mean over its distinct runs with a finite value."""
    runs = runs.drop_duplicates("digest")
    vals = runs[value_col].astype(float)
    runs = runs[vals.notna() & (vals.abs() != math.inf)]
    return {(stratum, str(m)): float(v) for m, v in runs.groupby("model")[value_col].mean().items()}


def cell_estimate(plan: Plan, runs: pd.DataFrame, stratum: str, value_col: str, factor: float = 100.0) -> Estimate:
    """The cell's model-level estimate, x ``factor`` (the tables print x100)."""
    runs = runs.drop_duplicates("digest") if len(runs) else runs
    vals = unit_values(runs, stratum, value_col) if len(runs) else {}
    n = int(runs[value_col].astype(float).notna().sum()) if len(runs) else 0
    return scaled(cell(plan, vals, n), factor)


def units_of(runs: pd.DataFrame, stratum_col: str | None = None, stratum: str = "") -> set:
    """The (stratum, model) units of a run frame (stratum from a column, or one fixed stratum)."""
    if runs.empty:
        return set()
    strata = runs[stratum_col].astype(str) if stratum_col else [stratum] * len(runs)
    return set(zip(strata, runs.model.astype(str)))


def cell_estimates(
    plan: Plan, runs: pd.DataFrame, by: list[str], stratum: str, value_col: str, factor: float = 100.0
) -> dict[tuple, Estimate]:
    """cell_estimate for every group of ``by`` at once (one groupby instead of one per cell)."""
    runs = runs.drop_duplicates("digest")
    sums: dict[tuple, dict] = {}
    for *key, model, v in zip(*(runs[c].tolist() for c in by), runs.model.tolist(), runs[value_col].tolist()):
        if v is not None and math.isfinite(float(v)):
            acc = sums.setdefault(tuple(key), {}).setdefault((stratum, str(model)), [0.0, 0])
            acc[0], acc[1] = acc[0] + float(v), acc[1] + 1
    return {
        key: scaled(cell(plan, {u: s / n for u, (s, n) in per.items()}, sum(n for _, n in per.values())), factor)
        for key, per in sums.items()
    }


def models_text(plan: Plan, est: Estimate) -> str:
    return ";".join(sorted(str(plan.units[i][1]) for i in est.units))


def tidy(plan: Plan, est: Estimate, table: str, row, task: str, column: str, rate) -> dict:
    """One tidy cell row; no interval when the cell rests on fewer than 2 models."""
    lo, hi = interval(plan, est)
    return {
        "table": table,
        "row": row,
        "task": task,
        "column": column,
        "rate": rate,
        "value": est.value,
        "n_models": sum(n_models(plan, est).values()),
        "n_runs": est.n_runs,
        "ci_low": lo,
        "ci_high": hi,
        "models": models_text(plan, est),
    }


def half_width(plan: Plan, est: Estimate | None) -> float | None:
    """The printed '± half-width': only from an interval of >= 2 models with a non-zero width."""
    if est is None or sum(n_models(plan, est).values()) < 2:
        return None
    lo, hi = interval(plan, est)
    if math.isnan(lo) or hi - lo <= 0:
        return None
    return (hi - lo) / 2


def n_label(plan: Plan, est: Estimate | None) -> str:
    """'(n=1)': what a cell without an interval prints instead of '±'."""
    if est is None:
        return ""
    n = sum(n_models(plan, est).values())
    return f" (n={n})" if n else ""
