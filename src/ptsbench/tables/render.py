"""TrackTable -> Markdown, CSV and LaTeX (booktabs), plus the gap list.

Markdown and LaTeX print numbers with the cell flags ('*' = fewer runs than the row's
neighbours, only in ``--unmatched`` tables; 'fail' = every run of the cell failed, '—' = no
run), ``value ± half-width`` of the 95% interval over models where the cell rests on >= 2 models
and the interval has a width, else ``value (n=k)`` (Markdown), and mark the best value of each
column in bold, like the paper's colour marks. The CSV keeps plain numbers (empty = no value);
``tableN_*_cells.csv`` has one row per cell (table, row, task, column, rate, value, n_models,
n_runs, ci_low, ci_high, models); flags and gaps go to gaps.csv.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .base import FAILED, TrackTable
from .cells import CELL_COLUMNS, half_width, n_label

MISSING = "—"


def _best(table: TrackTable, col: str, rows: list):
    how = table.better.get(col)
    vals = pd.to_numeric(table.values.loc[rows, col], errors="coerce").dropna() if how else pd.Series(dtype=float)
    if len(vals) < 2:
        return None
    return vals.max() if how == "max" else vals.min()


def _uncertainty(table: TrackTable, idx, col, pm: str, digits: int) -> str:
    """' ± 1.23' from an interval over >= 2 models, else ' (n=1)'; '' for a column without estimates."""
    est = table.estimate(idx, col)
    if est is None:
        return ""
    half = half_width(table.plan, est)
    return f"{pm}{half:.{digits}f}" if half is not None else n_label(table.plan, est)


def cell_strings(table: TrackTable, bold: tuple[str, str], missing: str, star: str, pm: str | None = None, escape=str):
    """Row label tuples and formatted cell strings; the best value among compared rows in bold;
    with ``pm``, the 95% half-width (or the number of models when there is no interval); text cells
    pass through ``escape`` (HTML)."""
    out = []
    groups = table.groups or [list(table.values.index)]
    group_of = {row: i for i, g in enumerate(groups) for row in g}
    best: dict[tuple[int | None, Any], Any] = {
        (i, c): _best(table, c, g) for i, g in enumerate(groups) for c in table.values.columns
    }
    for idx, row in table.values.iterrows():
        label = list(idx) if isinstance(idx, tuple) else [idx]
        cells = []
        for col, v in row.items():
            flag = table.flags.at[idx, col] if col in table.flags.columns else ""
            if isinstance(v, str):
                cells.append(escape(v))
            elif v is None or math.isnan(v):
                cells.append(FAILED if flag == FAILED else missing)
            else:
                s = f"{v:.{table.digits.get(col, 2)}f}"
                top = best.get((group_of.get(idx), col))
                if top is not None and v == top:
                    s = f"{bold[0]}{s}{bold[1]}"
                if pm:
                    s += _uncertainty(table, idx, col, pm, table.digits.get(col, 2))
                cells.append(s + (star if flag == "*" else ""))
        out.append(([str(x) for x in label], cells))
    return out


def index_names(table: TrackTable) -> list[str]:
    return [n or "" for n in table.values.index.names]


def to_markdown(table: TrackTable) -> str:
    head = index_names(table) + [str(c) for c in table.values.columns]
    lines = [
        f"### {table.title}",
        "",
        "| " + " | ".join(head) + " |",
        "|"
        + "|".join(
            ["---"] * len(index_names(table))
            + ["---" if table.values[c].dtype == object else "--:" for c in table.values.columns]
        )
        + "|",
    ]
    for label, cells in cell_strings(table, ("**", "**"), MISSING, "*", " ± "):
        lines.append("| " + " | ".join(label + cells) + " |")
    if table.values.empty:
        lines.append("| (no data) |")
    lines.append("")
    lines += [f"- {n}" for n in table.notes]
    n_gaps = len(table.gaps)
    if n_gaps:
        lines.append(
            f"- {n_gaps} gap(s): runs missing or failed ('*' marks cells averaged over fewer runs); see gaps.md"
        )
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("—", "--")):
        s = s.replace(a, b)
    return s


def to_latex(table: TrackTable) -> str:
    n_idx = len(index_names(table))
    head = [_tex(h) for h in index_names(table) + [str(c) for c in table.values.columns]]
    spec = "l" * n_idx + ("p{12cm}" if table.key.startswith("table5") else "r" * len(table.values.columns))
    lines = [f"% {table.title}", r"\begin{tabular}{" + spec + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for label, cells in cell_strings(table, (r"\textbf{", "}"), "--", "$^*$"):
        lines.append(
            " & ".join(
                [_tex(x) for x in label] + [c if c.startswith(r"\textbf") or "$" in c else _tex(c) for c in cells]
            )
            + r" \\"
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def gaps_frame(tables: list[TrackTable]) -> pd.DataFrame:
    rows = [g for t in tables for g in t.gaps]
    lead = ["table", "row", "kind", "task", "model", "dataset", "allocator", "reconstruction", "rate", "seed"]
    frame = pd.DataFrame(rows)
    cols = [c for c in lead if c in frame.columns] + [c for c in frame.columns if c not in lead]
    return frame[cols] if len(frame) else pd.DataFrame(columns=lead)


def write_table(table: TrackTable, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{table.key}.{ext}" for ext in ("md", "csv", "tex")]
    paths[0].write_text(to_markdown(table))
    (table.csv_frame if table.csv_frame is not None else table.values).to_csv(
        paths[1], index=table.csv_frame is None, float_format="%.4f"
    )
    paths[2].write_text(to_latex(table))
    if table.cells:
        paths.append(out_dir / f"{table.key}_cells.csv")
        cells_frame(table).to_csv(paths[-1], index=False, float_format="%.4f")
    return paths


def cells_frame(table: TrackTable) -> pd.DataFrame:
    """The tidy per-cell frame of one table (one row per cell with value, n_models, n_runs, 95% CI, models)."""
    frame = pd.DataFrame(table.cells)
    extra = [c for c in frame.columns if c not in CELL_COLUMNS]
    return frame.reindex(columns=CELL_COLUMNS + extra)


def unmatched_columns(cells: pd.DataFrame) -> list[str]:
    """Columns of a tidy cells frame whose non-empty cells differ in n_models or models (within one
    Table 3 aspect): empty when every compared row covers the same models. n_runs may differ: a row
    that reads no calibration data has one run where its partners have one per seed."""
    cells = cells[cells.n_runs > 0]
    keys = ["column", "aspect"] if "aspect" in cells else ["column"]
    bad = []
    for key, g in cells.groupby(keys, sort=False):
        if g.n_models.nunique() > 1 or g.models.nunique() > 1:
            name = ", ".join(map(str, key)) if isinstance(key, tuple) else str(key)
            bad.append(
                f"{name}: " + "; ".join(f"{r} n_models={n} [{m}]" for r, n, m in zip(g.row, g.n_models, g.models))
            )
    return bad
