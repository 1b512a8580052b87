"""Table 5 — the overall ranking of PTSBench (paper §5.3): each track's rows, best to worst.

Rule: allocation by OM_alloc, reconstruction by OM_recon within each aspect (error correction,
input, granularity), architecture by OM_arch, size robustness by OM_robust (ascending: lower
is better), tasks by OM_task. Rows without a score are left out and named in a note, and so
are rows computed on unmatched cells (``--unmatched``): a ranking compares like with like or
not at all. Between two neighbours, '≈' replaces ',' when the 95% bootstrap interval of their
difference (paired over the matched cells) contains 0: that order is not significant.
"""

from __future__ import annotations

import math

import pandas as pd

from .base import TrackTable
from .compare import paired_difference
from .reconstruction import ASPECTS

SAME = " ≈ "


def _label(idx) -> str:
    if isinstance(idx, tuple):  # (dataset, family) rows of Table 6
        return str(idx[-1])
    return str(idx)


def _rank(table: TrackTable, column: str, ascending: bool, rows=None, several_datasets=False):
    """[(label, score, same_as_previous)] best to worst, plus the rows left out as unmatched."""
    values = table.values
    if values.empty or column not in values:
        return [], []
    col = values[column] if rows is None else values[column].reindex([r for r in rows if r in values.index])
    col = col.dropna()
    left_out = [_label(i) for i in col.index if i in table.unranked]
    col = col[[i not in table.unranked for i in col.index]].sort_values(ascending=ascending, kind="stable")
    out, prev = [], None
    for idx, score in col.items():
        label = f"{idx[1]} ({idx[0]})" if several_datasets and isinstance(idx, tuple) else _label(idx)
        same = False
        if prev is not None:
            lo, hi = paired_difference(table.boot, prev, idx, column)
            same = not math.isnan(lo) and lo <= 0 <= hi
        out.append((label, score, same))
        prev = idx
    return out, left_out


def ranking_table(t2: TrackTable, t3: TrackTable, t4: TrackTable, t6: TrackTable) -> TrackTable:
    datasets = t6.values.index.get_level_values(0).unique() if len(t6.values) else []
    several = len(datasets) > 1
    tracks: list[tuple[str, tuple, int]] = [("Sparsity allocation (OM_alloc)", _rank(t2, "OM_alloc", False), 2)]
    for aspect, (_, choices, _) in ASPECTS.items():
        tracks.append(
            (f"Reconstruction: {aspect} (OM_recon)", _rank(t3, "OM_recon", False, [label for _, label in choices]), 2)
        )
    tracks += [
        ("Neural architecture (OM_arch)", _rank(t6, "OM_arch", False, several_datasets=several), 2),
        (
            "Model size robustness (OM_robust, lower is better)",
            _rank(t6, "OM_robust", True, several_datasets=several),
            3,
        ),
        ("Different tasks (OM_task)", _rank(t4, "OM_task", False), 2),
    ]
    text, notes = {}, []
    for name, (ranked, left_out), d in tracks:
        parts = [
            ("" if i == 0 else (SAME if same else ", ")) + f"{label} ({score:.{d}f})"
            for i, (label, score, same) in enumerate(ranked)
        ]
        text[name] = "".join(parts) if parts else math.nan
        if left_out:
            notes.append(f"{name}: not ranked, computed on unmatched cells: {', '.join(left_out)}")
    values = pd.DataFrame({"Results (best to worst)": pd.Series(text, dtype=object)})
    values.index.name = "track"
    flags = pd.DataFrame("", index=values.index, columns=values.columns)
    long = pd.DataFrame(
        [
            {"track": name, "rank": i + 1, "entry": label, "score": score, "tied_with_previous": same}
            for name, (ranked, _), _ in tracks
            for i, (label, score, same) in enumerate(ranked)
        ],
        columns=["track", "rank", "entry", "score", "tied_with_previous"],
    )
    notes = [
        "tracks without any scored row show '—'; '≈': the 95% interval of the difference to the previous "
        "entry contains 0 (not significant)"
    ] + notes
    return TrackTable(
        "table5_ranking",
        "Table 5: overall ranking per track (best to worst)",
        values,
        flags,
        {},
        notes,
        [],
        csv_frame=long,
    )
