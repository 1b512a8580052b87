"""The task x rate layout of Tables 2 and 3: per task one column per rate and the task's MS, then
the overall column (OM) over the tasks every row has.

Rule: a row's runs are split when they hold different settings and matched across rows
(``tables.matching``); each cell is the mean over models of the models' seed-means
(``tables.cells``); MS = the signed quadratic mean over rates of the cells, OM = the signed
quadratic mean of the tasks' MS (``ptsbench.metrics``). Every value is an ``Estimate`` over one
jackknife plan of the table's (task, model) units, so two rows' difference is paired by model.
A task missing from one row leaves every row's OM (a note says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .base import rate_label
from .cells import cell_estimates, tidy, units_of
from .evidence import JACKKNIFE, Estimate, Plan, make_plan, missing, signed_qmean
from .labels import task_label
from .matching import match_cells, separate_settings


@dataclass
class Grid:
    """Values x100, the estimate behind each, and the tidy cells."""

    values: pd.DataFrame
    where: dict[str, tuple]  # column -> (task, rate); a task's MS: (task, None)
    plan: Plan
    est: dict[tuple, Estimate] = field(default_factory=dict)  # (row, column) -> estimate x100
    cells: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unmatched_rows: set = field(default_factory=set)
    used: pd.DataFrame | None = None
    pooled: dict[str, list[str]] = field(default_factory=dict)  # overall column -> the MS columns it pools


def _split_rows(rows: Sequence, runs: pd.DataFrame, row_col: str) -> list:
    """The row order with every split row replaced by its labels."""
    present = set(runs[row_col]) if len(runs) else set()
    out = []
    for r in rows:
        out += [r] if r in present or not any(str(p).startswith(f"{r} (") for p in present) else []
        out += sorted(p for p in present if str(p).startswith(f"{r} (") and p not in rows)
    return out


def _match_tasks(runs, row_col, rows, tasks, matched) -> tuple[dict, set, list[str]]:
    kept, unmatched, notes = {}, set(), []
    for task in tasks:
        kept[task], unm, task_notes = match_cells(runs[runs.task == task], row_col, rows, matched)
        unmatched |= unm
        notes += [f"{task_label(task)}: {n}" for n in task_notes]
    return kept, unmatched, notes


def _task_block(grid: Grid, t: pd.DataFrame, task: str, row_col: str, rows, value_col: str) -> list[str]:
    """One task's rate columns and MS column for every row; returns the column names."""
    label, rates = task_label(task), sorted(t.rate.dropna().unique())
    cols = [f"{label} {rate_label(r)}" for r in rates] + [f"{label} MS"]
    grid.where.update({c: (task, r) for c, r in zip(cols, [*rates, None])})
    cells = cell_estimates(grid.plan, t, [row_col, "rate"], label, value_col)
    for row in rows:
        per_rate = [cells.get((row, r), missing(grid.plan)) for r in rates]
        grid.est.update({(row, c): e for c, e in zip(cols, per_rate)})
        grid.est[(row, cols[-1])] = signed_qmean(grid.plan, per_rate)
    return cols


def _overall(grid: Grid, rows, tasks, name: str, matched: bool) -> None:
    def ms(r, t):
        return grid.est[(r, f"{task_label(t)} MS")].value

    active = [r for r in rows if any(math.isfinite(ms(r, t)) for t in tasks)]
    for t in tasks:  # a row without a task the others have is not comparable on the overall column either
        have = [r for r in active if math.isfinite(ms(r, t))]
        if have:
            grid.unmatched_rows |= set(active) - set(have)
    common = [t for t in tasks if active and all(math.isfinite(ms(r, t)) for r in active)]
    for r in rows:
        use = common if matched else [t for t in tasks if math.isfinite(ms(r, t))]
        grid.est[(r, name)] = signed_qmean(grid.plan, [grid.est[(r, f"{task_label(t)} MS")] for t in use])
    grid.pooled[name] = [f"{task_label(t)} MS" for t in common]
    missing = [task_label(t) for t in tasks if t not in common and any(math.isfinite(ms(r, t)) for r in rows)]
    if matched and missing and common:
        grid.notes.append(
            f"{name} over {', '.join(task_label(t) for t in common)} only: not every row has {', '.join(missing)}"
        )


def task_rate_grid(
    runs: pd.DataFrame,
    row_col: str,
    rows: Sequence,
    tasks: Sequence[str],
    value_col: str,
    overall_name: str,
    *,
    table: str,
    matched: bool = True,
    kind: str = JACKKNIFE,
    plan: Plan | None = None,
) -> Grid:
    """The Table 2/3 layout of ``runs`` (one row label per ``row_col`` value); ``plan``: one shared
    by several grids of a table (Table 3's aspects), else one over this grid's units."""
    runs = runs[np.isfinite(runs[value_col].astype(float))] if len(runs) else runs
    runs, split_notes = separate_settings(runs, row_col)
    rows = _split_rows(rows, runs, row_col)
    kept, unmatched, notes = _match_tasks(runs, row_col, rows, tasks, matched)
    units = set().union(*(units_of(k, stratum=task_label(t)) for t, k in kept.items())) if kept else set()
    plan = plan if plan is not None else make_plan(units, kind)
    grid = Grid(pd.DataFrame(), {}, plan, notes=split_notes + notes, unmatched_rows=unmatched)
    columns = [c for task in tasks for c in _task_block(grid, kept[task], task, row_col, rows, value_col)]
    _overall(grid, rows, tasks, overall_name, matched)
    columns.append(overall_name)
    grid.values = pd.DataFrame(
        {c: [grid.est[(r, c)].value for r in rows] for c in columns}, index=pd.Index(rows, name=row_col), dtype=float
    )
    grid.used = pd.concat(kept.values()) if kept else runs.iloc[:0]
    for (r, col), est in grid.est.items():
        if est.units:
            task, rate = grid.where.get(col, (None, None))
            grid.cells.append(tidy(grid.plan, est, table, r, task_label(task) if task else "all", col, rate))
    return grid
