"""Table 5 — the overall ranking of PTSBench (paper §5.3): each track's rows, best to worst.

Rule: allocation by OM_alloc, reconstruction by OM_recon within each aspect (error correction,
input, granularity), architecture by OM_arch, size robustness by OM_robust (ascending: lower
is better), tasks by OM_task. Rows without a score are left out and named in a note, and so
are rows computed on unmatched cells (``--unmatched``): a ranking compares like with like or
not at all. Between two neighbours, '>' only when their difference (paired by model) is
significant by the findings' rule (``tables.verdicts``: enough models in every stratum and a
95% interval of non-zero width that excludes 0); otherwise '≈', a tie.
"""

from __future__ import annotations

import math

import pandas as pd

from .base import TrackTable
from .evidence import combine
from .reconstruction import ASPECTS
from .verdicts import MIN_MODELS, significant

SAME, ORDER = " ≈ ", " > "


def _label(idx, several_datasets: bool = False) -> str:
    if isinstance(idx, tuple):  # (dataset, family) rows of Table 6
        return f"{idx[1]} ({idx[0]})" if several_datasets else str(idx[-1])
    return str(idx)


def _rank(table: TrackTable, column: str, ascending: bool, min_models: int, rows=None, several_datasets=False):
    """[(label, score, tied_with_previous)] best to worst, plus the rows left out as unmatched."""
    values = table.values
    if values.empty or column not in values:
        return [], []
    col = values[column] if rows is None else values[column].reindex([r for r in rows if r in values.index])
    col = col.dropna()
    left_out = [_label(i) for i in col.index if i in table.unranked]
    col = col[[i not in table.unranked for i in col.index]].sort_values(ascending=ascending, kind="stable")
    out, prev = [], None
    for idx, score in col.items():
        tied = False
        if prev is not None:
            a, b = table.estimate(prev, column), table.estimate(idx, column)
            tied = (
                a is None
                or b is None
                or not significant(table.plan, combine(lambda x, y: x - y, a, b), min_models, table.unit)
            )
        out.append((_label(idx, several_datasets), score, tied))
        prev = idx
    return out, left_out


def _tracks(t2, t3, t4, t6, min_models: int) -> list[tuple[str, tuple, int]]:
    several = len(t6.values) > 0 and len(t6.values.index.get_level_values(0).unique()) > 1
    tracks = [("Sparsity allocation (OM_alloc)", _rank(t2, "OM_alloc", False, min_models), 2)]
    for i, aspect in enumerate(ASPECTS):
        rows = t3.groups[i] if i < len(t3.groups) else []
        tracks.append((f"Reconstruction: {aspect} (OM_recon)", _rank(t3, "OM_recon", False, min_models, rows), 2))
    tracks += [
        ("Neural architecture (OM_arch)", _rank(t6, "OM_arch", False, min_models, several_datasets=several), 2),
        (
            "Model size robustness (OM_robust, lower is better)",
            _rank(t6, "OM_robust", True, min_models, several_datasets=several),
            3,
        ),
        ("Different tasks (OM_task)", _rank(t4, "OM_task", False, min_models), 2),
    ]
    return tracks


def ranking_table(
    t2: TrackTable, t3: TrackTable, t4: TrackTable, t6: TrackTable, min_models: int = MIN_MODELS
) -> TrackTable:
    tracks = _tracks(t2, t3, t4, t6, min_models)
    text, notes = {}, []
    for name, (ranked, left_out), d in tracks:
        parts = [
            ("" if i == 0 else (SAME if tied else ORDER)) + f"{label} ({score:.{d}f})"
            for i, (label, score, tied) in enumerate(ranked)
        ]
        text[name] = "".join(parts) if parts else math.nan
        if left_out:
            notes.append(f"{name}: not ranked, computed on unmatched cells: {', '.join(left_out)}")
    values = pd.DataFrame({"Results (best to worst)": pd.Series(text, dtype=object)})
    values.index.name = "track"
    long = pd.DataFrame(
        [
            {"track": name, "rank": i + 1, "entry": label, "score": score, "tied_with_previous": tied}
            for name, (ranked, _), _ in tracks
            for i, (label, score, tied) in enumerate(ranked)
        ],
        columns=["track", "rank", "entry", "score", "tied_with_previous"],
    )
    notes = [
        "tracks without any scored row show '—'; '>': the difference to the next entry is significant "
        f"(at least {min_models} models in every task or family it rests on and a 95% interval, paired by model, "
        "that excludes 0); '≈': it is not (a tie, in the order of the point values)"
    ] + notes
    return TrackTable(
        "table5_ranking",
        "Table 5: overall ranking per track (best to worst)",
        values,
        pd.DataFrame("", index=values.index, columns=values.columns),
        {},
        notes,
        [],
        csv_frame=long,
    )
