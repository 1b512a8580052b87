"""What every track table shares: the result container, coverage gaps, cell flags.

A *cell* of a table (one row at one task and rate) averages several runs. A run is *expected* of a
row in a column (a task and rate) when the row ran something there, or when at least two rows
did (a comparison was evidently meant); a column only one other row ran is that row's own (the
methods rows' extra rates are not Table 2's gaps). An expected run without an ``ok`` record is a
gap; its cell is marked '*' when it still has some runs (only in ``--unmatched`` tables: a matched
cell is computed on the runs every row has), 'fail' when every run of the cell failed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from .evidence import Estimate, Plan, make_plan
from .labels import task_label

INCOMPLETE, FAILED = "*", "fail"


@dataclass
class TrackTable:
    """One paper table: numbers (x100) and a same-shaped frame of cell flags."""

    key: str  # file stem, e.g. "table2_allocation"
    title: str
    values: pd.DataFrame  # index = row labels, flat string columns
    flags: pd.DataFrame  # "" | INCOMPLETE | FAILED, same shape as values
    better: dict[str, str] = field(default_factory=dict)  # column -> "max" | "min" (best is marked)
    notes: list[str] = field(default_factory=list)
    gaps: list[dict] = field(default_factory=list)
    digits: dict[str, int] = field(default_factory=dict)  # column -> decimals (default 2)
    csv_frame: pd.DataFrame | None = None  # what the CSV holds, when not `values`
    groups: list[list] = field(default_factory=list)  # rows compared with each other (default: all)
    cells: list[dict] = field(default_factory=list)  # tidy cells: value, n_models, n_runs, 95% CI, models
    est: dict = field(default_factory=dict)  # (row, column) -> Estimate (x100, model-level)
    plan: Plan = field(default_factory=lambda: make_plan([]))
    unranked: set = field(default_factory=set)  # rows Table 5 must not rank (unmatched)
    pooled: dict = field(default_factory=dict)  # overall column -> the per-task columns it pools
    fixed: list[dict] = field(default_factory=list)  # every knob held fixed (held_fixed.csv)
    unit: str = "model"  # what one resampled unit is called in reasons ("model", "size")
    beyond: set = field(default_factory=set)  # rows beyond the paper (the paper's findings leave them out)
    _rows: dict = field(default_factory=dict, repr=False)

    def estimate(self, row, column) -> Estimate | None:
        return self.est.get((row, column))

    def row_of(self, label: str):
        """The index entry whose (last) label is ``label``, or None."""
        if len(self._rows) != len(self.values.index):
            self._rows.clear()
            for i in self.values.index:
                self._rows.setdefault(str(i[-1] if isinstance(i, tuple) else i), i)
        return self._rows.get(label)


def rate_label(rate: float) -> str:
    return f"{rate * 100:g}"


def _plain(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _tuples(frame: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    """Row tuples with NaN turned into None, so that missing values compare equal."""
    if not cols:
        return [()] * len(frame)
    return list(zip(*([_plain(v) for v in frame[c].tolist()] for c in cols))) if len(frame) else []


def _columns_by_row(both: pd.DataFrame, row_cols, column_cols) -> tuple[dict, dict]:
    """(row -> the columns it ran, column -> how many rows ran it)."""
    ran: dict = {}
    for r in _tuples(both, [*row_cols, *column_cols]):
        ran.setdefault(r[: len(row_cols)], set()).add(r[len(row_cols) :])
    rows_per_column: dict = {}
    for cols in ran.values():
        for c in cols:
            rows_per_column[c] = rows_per_column.get(c, 0) + 1
    return ran, rows_per_column


def coverage_gaps(
    table: str,
    ok: pd.DataFrame,
    failed: pd.DataFrame,
    row_cols: Sequence[str],
    shared_cols: Sequence[str],
    per_row_cols: Sequence[str] = (),
    column_cols: Sequence[str] = ("task", "rate"),
) -> list[dict]:
    """Runs a row lacks: every combination of the ``per_row_cols`` tuples seen in that row with the
    ``shared_cols`` tuples seen anywhere in the table (ok or failed), in the columns expected of the
    row (see the module docstring). A missing run with a failed record is kind 'failed', else 'missing'."""
    both = pd.concat([ok, failed], ignore_index=True)
    if both.empty:
        return []
    shared = sorted(set(_tuples(both, shared_cols)), key=str)
    have = set(_tuples(ok, [*row_cols, *per_row_cols, *shared_cols]))
    errors = {r[:-1]: r[-1] for r in _tuples(failed, [*row_cols, *per_row_cols, *shared_cols, "error"])}
    ran, rows_per_column = _columns_by_row(both, row_cols, column_cols)
    col_index = [list(shared_cols).index(c) for c in column_cols]
    gaps = []
    for row_key, rows in both.groupby(list(row_cols), sort=False, dropna=False):
        row_key = row_key if isinstance(row_key, tuple) else (row_key,)
        row_key = tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row_key)
        per_row = sorted(set(_tuples(rows, per_row_cols)), key=str)
        for a, b in itertools.product(per_row, shared):
            column = tuple(b[i] for i in col_index)
            if column not in ran.get(row_key, set()) and rows_per_column.get(column, 0) < 2:
                continue
            coord = (*row_key, *a, *b)
            if coord in have:
                continue
            gap = {
                "table": table,
                "row": ", ".join(map(str, row_key)),
                "kind": "failed" if coord in errors else "missing",
            }
            gap["error"] = errors.get(coord, "")
            gap.update(zip([*row_cols, *per_row_cols, *shared_cols], coord))
            gaps.append(gap)
    return gaps


def flag_cells(
    values: pd.DataFrame,
    gaps: list[dict],
    row_of: Callable[[dict], object],
    col_of: Callable[[dict], str | None],
    incomplete: bool = True,
) -> pd.DataFrame:
    """Flags frame: INCOMPLETE where a cell has a value but lacks runs (only when the table is
    not matched), FAILED where a cell has no value and one of its runs failed."""
    flags = pd.DataFrame("", index=values.index, columns=values.columns)
    for gap in gaps:
        row, col = row_of(gap), col_of(gap)
        if row not in flags.index or col not in flags.columns:
            continue
        v = values.at[row, col]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if gap["kind"] == "failed":
                flags.at[row, col] = FAILED
        elif incomplete:
            flags.at[row, col] = INCOMPLETE
    return flags


def flag_task_rate(
    values: pd.DataFrame, where: dict, gaps: list[dict], row_key: str, incomplete: bool = True
) -> pd.DataFrame:
    """flag_cells for the task x rate layout: a gap marks its rate column, the task's MS and the OM."""
    flags = flag_cells(
        values,
        gaps,
        lambda g: g[row_key],
        lambda g: next((c for c, (t, r) in where.items() if t == g["task"] and r == g["rate"]), None),
        incomplete,
    )
    for gap in gaps if incomplete else []:
        row = gap[row_key]
        if row not in flags.index:
            continue
        for col in (f"{task_label(gap['task'])} MS", values.columns[-1]):
            if col in flags.columns and not math.isnan(values.at[row, col]) and not flags.at[row, col]:
                flags.at[row, col] = INCOMPLETE
    return flags
