"""Table 2 — sparsity allocation track (paper §3.1 ①, Eq. 2).

Rule: take the runs without reconstruction (accuracy right after masking); per allocator and
task, average the relative score over the models at each rate (each model's seeds first), MS =
signed quadratic mean over the rates, OM_alloc = signed quadratic mean of the tasks' MS. Rows are
allocators (label and order from the allocator registry: 'FCPTS (ERK)' is fcpts with init erk;
runs of one label with different allocator knobs are separate rows). The rows are matched
(``tables.matching``): every allocator is averaged over the same model x dataset x rate x seed
cells, whose runs differ only in the allocator subtree. Intervals resample models
(``tables.evidence``).
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from .base import TrackTable, coverage_gaps, flag_task_rate
from .evidence import JACKKNIFE
from .grid import task_rate_grid
from .knobs import held_fixed
from .labels import ordered_tasks, task_label
from .matching import with_rest
from .runs import RunSet

TITLE = "Table 2: sparsity allocation (no reconstruction)"
WANDA_KEY = "alloc-wanda"
WANDA_TITLE = "Table 2 on Wanda masks: sparsity allocation beyond the paper (Wanda's per-row rule, no reconstruction)"

COORDS = ("task", "model", "dataset", "rate", "seed")
COMPARED = ("allocator",)
INTERVAL_NOTE = (
    "± = half-width of the 95% interval over models (jackknife t; each model's seeds averaged first), "
    "(n=k) where fewer than 2 models leave no interval"
)
BEYOND_PAPER_ORDER = 10  # registry order of the allocators published after the paper (OWL, AlphaPruning)


def allocator_rows(runs) -> list[str]:
    """Allocator labels in registry order (Uniform, L2Norm, ERK, FCPTS (L2Norm), FCPTS (ERK), others)."""
    order = dict(zip(runs.allocator, runs.allocator_order))
    return sorted(order, key=lambda label: order[label])


def allocation_table(
    runset: RunSet,
    matched: bool = True,
    kind: str = JACKKNIFE,
    key: str = "table2_allocation",
    title: str = TITLE,
    name: str = "table2",
) -> TrackTable:
    """Table 2 on ``runset``'s runs without reconstruction; ``key``/``title``/``name`` (the label of its
    cells, gaps and held-fixed knobs) name a rebuild of it on other masks (``wanda_allocation_table``)."""
    ok = with_rest(runset.ok[runset.ok.reconstruction == "none"], COMPARED)
    failed = runset.failed[runset.failed.reconstruction == "none"]
    rows = allocator_rows(pd.concat([ok, failed]))
    tasks = ordered_tasks(set(ok.task) | set(failed.task))
    grid = task_rate_grid(ok, "allocator", rows, tasks, "rel", "OM_alloc", table=name, matched=matched, kind=kind)
    gaps = coverage_gaps(name, ok, failed, ["allocator"], COORDS)
    flags = flag_task_rate(grid.values, grid.where, gaps, "allocator", incomplete=not matched)
    notes = []
    missing = [task_label(t) for t in tasks if ok[ok.task == t].empty]
    if missing and rows:
        notes.append(f"no runs for {', '.join(missing)}: OM_alloc is over the other tasks only")
    if not rows:
        notes.append("no runs with reconstruction=none")
    notes.append(
        "relative score x100 (A_s/A_dense; A_dense/A_s for lower-is-better metrics); "
        "MS = signed quadratic mean over rates; OM_alloc = signed quadratic mean over tasks (Eq. 2); " + INTERVAL_NOTE
    )
    notes += grid.notes
    orders = dict(zip(pd.concat([ok, failed]).allocator, pd.concat([ok, failed]).allocator_order))
    beyond = [r for r in rows if orders.get(r, (0,))[0] >= BEYOND_PAPER_ORDER]
    if beyond:
        notes.append(f"{', '.join(beyond)}: beyond the paper (allocators published after it), after its rows")
    if not matched and grid.unmatched_rows:
        notes.append(
            f"--unmatched: {', '.join(sorted(grid.unmatched_rows))} lack some cells ('*'); Table 5 does not rank them"
        )
    fixed_notes, fixed = held_fixed(grid.used, COMPARED, name)
    return TrackTable(
        key,
        title,
        grid.values,
        flags,
        {c: "max" for c in grid.values.columns if not grid.values[c].isna().all()},
        notes + fixed_notes,
        gaps,
        cells=grid.cells,
        est=grid.est,
        plan=grid.plan,
        unranked=grid.unmatched_rows if not matched else set(),
        pooled=grid.pooled,
        fixed=fixed,
        beyond=set(beyond),
    )


def wanda_runs(runset: RunSet) -> RunSet:
    """The runs of Table 2 on Wanda masks: Wanda as published (per output row), unstructured, no
    reconstruction; each allocator decides the layers' counts, Wanda which weights."""
    runs = runset.runs
    keep = (runs.method == "Wanda") & (runs.pattern == "unstructured") & (runs.reconstruction == "none")
    keep &= runs.refine == "none"
    return dataclasses.replace(runset, runs=runs[keep].reset_index(drop=True))


def wanda_allocation_table(runset: RunSet, matched: bool = True, kind: str = JACKKNIFE) -> TrackTable:
    """Table 2 rebuilt on Wanda masks: where OWL's claim (it beats uniform allocation for Wanda) is judged."""
    return allocation_table(wanda_runs(runset), matched, kind, WANDA_KEY, WANDA_TITLE, WANDA_KEY)


def rate_curves(runset: RunSet) -> dict[str, dict[str, dict[float, float]]]:
    """task -> allocator -> rate -> mean over models of each model's mean relative score (the plot)."""
    ok = runset.ok[runset.ok.reconstruction == "none"]
    out: dict = {}
    order = dict(zip(ok.allocator, ok.allocator_order))
    groups = sorted(ok.groupby(["task", "allocator"]), key=lambda kv: (kv[0][0], order.get(kv[0][1], (99,))))
    for (task, alloc), g in groups:
        per_model = g.groupby(["rate", "model"]).rel.mean().groupby(level="rate").mean()
        out.setdefault(task, {})[alloc] = {float(r): float(v) for r, v in per_model.items() if not math.isnan(v)}
    return out
