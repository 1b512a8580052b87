"""Table 5 — the overall ranking of PTSBench (paper §5.3): each track's rows, best to worst.

Rule: allocation by OM_alloc, reconstruction by OM_recon within each aspect (error correction,
input, granularity), architecture by OM_arch, size robustness by OM_robust (ascending: lower
is better), tasks by OM_task. Rows without a score are left out and named in a note.
"""
from __future__ import annotations

import math

import pandas as pd

from .base import TrackTable
from .reconstruction import ASPECTS


def _label(idx) -> str:
    if isinstance(idx, tuple):  # (dataset, family) rows of Table 6
        return str(idx[-1])
    return str(idx)


def _rank(values: pd.DataFrame, column: str, ascending: bool, rows=None, several_datasets=False):
    if values.empty or column not in values:
        return []
    col = values[column] if rows is None else values[column].reindex([r for r in rows if r in values.index])
    col = col.dropna().sort_values(ascending=ascending, kind="stable")
    labels = [f"{idx[1]} ({idx[0]})" if several_datasets and isinstance(idx, tuple) else _label(idx) for idx in col.index]
    return list(zip(labels, col.tolist()))


def ranking_table(t2: TrackTable, t3: TrackTable, t4: TrackTable, t6: TrackTable) -> TrackTable:
    datasets = t6.values.index.get_level_values(0).unique() if len(t6.values) else []
    several = len(datasets) > 1
    tracks: list[tuple[str, list, int]] = [("Sparsity allocation (OM_alloc)", _rank(t2.values, "OM_alloc", False), 2)]
    for aspect, (_, choices) in ASPECTS.items():
        tracks.append((f"Reconstruction: {aspect} (OM_recon)",
                       _rank(t3.values, "OM_recon", False, [label for _, label in choices]), 2))
    tracks += [("Neural architecture (OM_arch)", _rank(t6.values, "OM_arch", False, several_datasets=several), 2),
               ("Model size robustness (OM_robust, lower is better)",
                _rank(t6.values, "OM_robust", True, several_datasets=several), 3),
               ("Different tasks (OM_task)", _rank(t4.values, "OM_task", False), 2)]
    text = {name: ", ".join(f"{label} ({score:.{d}f})" for label, score in ranked) if ranked else math.nan
            for name, ranked, d in tracks}
    values = pd.DataFrame({"Results (best to worst)": pd.Series(text, dtype=object)})
    values.index.name = "track"
    flags = pd.DataFrame("", index=values.index, columns=values.columns)
    long = pd.DataFrame([{"track": name, "rank": i + 1, "entry": label, "score": score}
                         for name, ranked, _ in tracks for i, (label, score) in enumerate(ranked)],
                        columns=["track", "rank", "entry", "score"])
    return TrackTable("table5_ranking", "Table 5: overall ranking per track (best to worst)", values, flags,
                      {}, ["tracks without any scored row show '—'"], [], csv_frame=long)
