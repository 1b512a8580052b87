"""Table 2 — sparsity allocation track (paper §3.1 ①, Eq. 2).

Rule: take the runs without reconstruction (accuracy right after masking); per allocator and
task, average the relative score over the runs at each rate, MS = quadratic mean over the
rates, OM_alloc = quadratic mean of the tasks' MS. Rows are allocators (label and order from
the allocator registry: 'FCPTS (ERK)' is fcpts with init erk). The rows are matched (see
``tables.compare``): every allocator is averaged over the same model x dataset x rate x seed
cells, whose runs differ only in the allocator subtree.
"""

from __future__ import annotations

import math

import pandas as pd

from ..metrics import ms, om_alloc
from .base import TrackTable, coverage_gaps, flag_task_rate
from .compare import compare_task_rate, held_fixed, with_rest
from .frame import RunSet, ordered_tasks, task_label

COORDS = ("task", "model", "dataset", "rate", "seed")
COMPARED = ("allocator",)
BEYOND_PAPER_ORDER = 10  # registry order of the allocators published after the paper (OWL, AlphaPruning)


def allocator_rows(runs) -> list[str]:
    """Allocator labels in registry order (Uniform, L2Norm, ERK, FCPTS (L2Norm), FCPTS (ERK), others)."""
    order = dict(zip(runs.allocator, runs.allocator_order))
    return sorted(order, key=lambda label: order[label])


def allocation_table(runset: RunSet, matched: bool = True) -> TrackTable:
    ok = with_rest(runset.ok[runset.ok.reconstruction == "none"], COMPARED)
    failed = runset.failed[runset.failed.reconstruction == "none"]
    rows = allocator_rows(pd.concat([ok, failed]))
    tasks = ordered_tasks(set(ok.task) | set(failed.task))
    grid = compare_task_rate(
        ok, "allocator", rows, tasks, "rel", ms, om_alloc, "OM_alloc", table="table2", matched=matched
    )
    values = grid.values
    gaps = coverage_gaps("table2", ok, failed, ["allocator"], COORDS)
    flags = flag_task_rate(values, grid.where, gaps, "allocator", incomplete=not matched)
    notes = []
    missing = [task_label(t) for t in tasks if ok[ok.task == t].empty]
    if missing and rows:
        notes.append(f"no runs for {', '.join(missing)}: OM_alloc is over the other tasks only")
    if not rows:
        notes.append("no runs with reconstruction=none")
    notes.append(
        "relative score x100 (A_s/A_dense; A_dense/A_s for lower-is-better metrics); "
        "MS = quadratic mean over rates; OM_alloc = quadratic mean over tasks (Eq. 2); "
        "± = half-width of the 95% bootstrap interval over the cell's runs (models x seeds)"
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
    notes += held_fixed(grid.used, COMPARED)
    better = {c: "max" for c in values.columns if not values[c].isna().all()}
    return TrackTable(
        "table2_allocation",
        "Table 2: sparsity allocation (no reconstruction)",
        values,
        flags,
        better,
        notes,
        gaps,
        cells=grid.cells,
        boot=grid.boot,
        n=grid.n,
        unranked=grid.unmatched_rows if not matched else set(),
    )


def rate_curves(runset: RunSet) -> dict[str, dict[str, dict[float, float]]]:
    """task -> allocator -> rate -> mean relative score (for the accuracy-vs-rate plot)."""
    ok = runset.ok[runset.ok.reconstruction == "none"]
    out: dict = {}
    order = dict(zip(ok.allocator, ok.allocator_order))
    groups = sorted(ok.groupby(["task", "allocator"]), key=lambda kv: (kv[0][0], order.get(kv[0][1], (99,))))
    for (task, alloc), g in groups:
        out.setdefault(task, {})[alloc] = {
            float(r): float(v) for r, v in g.groupby("rate").rel.mean().items() if not math.isnan(v)
        }
    return out
