"""What every track table shares: the result container, coverage gaps, the task x rate layout.

A *cell* of a table (one row at one task and rate) averages several runs. When a run that the
sweep evidently meant to do (its coordinates exist for another row of the same table) has no
``ok`` record, the cell is marked: '*' when it still has some runs (its mean is over fewer
runs than its neighbours'), 'fail'/'—' when it has none. Every such run is listed as a gap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from .frame import task_label

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
    cells: list[dict] = field(default_factory=list)  # tidy cells: value, n, 95% CI, models
    boot: dict = field(default_factory=dict)  # (row, column) -> bootstrap draws (x100)
    n: dict = field(default_factory=dict)  # (row, column) -> runs in the cell
    unranked: set = field(default_factory=set)  # rows Table 5 must not rank (unmatched)


def rate_label(rate: float) -> str:
    return f"{rate * 100:g}"


def _tuples(frame: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    """Row tuples with NaN turned into None, so that missing values compare equal."""
    return [
        tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r)
        for r in frame[list(cols)].itertuples(index=False)
    ]


def coverage_gaps(
    table: str,
    ok: pd.DataFrame,
    failed: pd.DataFrame,
    row_cols: Sequence[str],
    shared_cols: Sequence[str],
    per_row_cols: Sequence[str] = (),
) -> list[dict]:
    """Runs a row lacks. Expected for a row: every combination of the ``per_row_cols`` tuples
    seen in that row with the ``shared_cols`` tuples seen anywhere in the table (ok or failed).
    A missing run with a failed record is kind 'failed' (with its error), else 'missing'."""
    both = pd.concat([ok, failed], ignore_index=True)
    if both.empty:
        return []
    shared = sorted(set(_tuples(both, shared_cols)), key=str)
    have = set(_tuples(ok, [*row_cols, *per_row_cols, *shared_cols]))
    errors = {r[:-1]: r[-1] for r in _tuples(failed, [*row_cols, *per_row_cols, *shared_cols, "error"])}
    gaps = []
    for row_key, rows in both.groupby(list(row_cols), sort=False, dropna=False):
        row_key = row_key if isinstance(row_key, tuple) else (row_key,)
        per_row = sorted(set(_tuples(rows, per_row_cols)), key=str)
        for a, b in itertools.product(per_row, shared):
            coord = (*row_key, *a, *b)
            if coord in have:
                continue
            gap = {
                "table": table,
                "row": ", ".join(map(str, row_key)),
                "kind": "failed" if coord in errors else "missing",
                "error": errors.get(coord, ""),
            }
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
    not matched: a matched cell is computed on the runs every row has), FAILED where a cell has
    no value and one of its runs failed; summary columns (MS, OM) inherit INCOMPLETE."""
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
