"""Table 2 — sparsity allocation track (paper §3.1 ①, Eq. 2).

Rule: take the runs without reconstruction (accuracy right after masking); per allocator and
task, average the relative score over the runs at each rate, MS = quadratic mean over the
rates, OM_alloc = quadratic mean of the tasks' MS. Rows are allocators, FCPTS labelled by its
init ('FCPTS (ERK)', 'FCPTS (L2Norm)'); a task with no runs is a gap, and OM_alloc is then
over the tasks present (a note says which).
"""
from __future__ import annotations

import math

from ..metrics import ms, om_alloc
from .base import TrackTable, coverage_gaps, flag_task_rate, task_rate_table
from .frame import RunSet, ordered_tasks, task_label

ROW_ORDER = ("Uniform", "L2Norm", "ERK", "FCPTS (L2Norm)", "FCPTS (ERK)")
COORDS = ("task", "model", "dataset", "rate", "seed")


def allocation_table(runset: RunSet) -> TrackTable:
    ok = runset.ok[runset.ok.reconstruction == "none"]
    failed = runset.failed[runset.failed.reconstruction == "none"]
    present = set(ok.allocator) | set(failed.allocator)
    rows = [r for r in ROW_ORDER if r in present] + sorted(present - set(ROW_ORDER))
    tasks = ordered_tasks(set(ok.task) | set(failed.task))
    values, where = task_rate_table(ok, "allocator", rows, tasks, "rel", ms, om_alloc, "OM_alloc")
    gaps = coverage_gaps("table2", ok, failed, ["allocator"], COORDS)
    flags = flag_task_rate(values, where, gaps, "allocator")
    notes = []
    missing = [task_label(t) for t in tasks if ok[ok.task == t].empty]
    if missing and rows:
        notes.append(f"no runs for {', '.join(missing)}: OM_alloc is over the other tasks only")
    if not rows:
        notes.append("no runs with reconstruction=none")
    notes.append("relative score x100 (A_s/A_dense; A_dense/A_s for lower-is-better metrics); "
                 "MS = quadratic mean over rates; OM_alloc = quadratic mean over tasks (Eq. 2)")
    better = {c: "max" for c in values.columns if not values[c].isna().all()}
    return TrackTable("table2_allocation", "Table 2: sparsity allocation (no reconstruction)",
                      values, flags, better, notes, gaps)


def rate_curves(runset: RunSet) -> dict[str, dict[str, dict[float, float]]]:
    """task -> allocator -> rate -> mean relative score (for the accuracy-vs-rate plot)."""
    ok = runset.ok[runset.ok.reconstruction == "none"]
    out: dict = {}
    order = {label: i for i, label in enumerate(ROW_ORDER)}
    groups = sorted(ok.groupby(["task", "allocator"]), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99), kv[0][1]))
    for (task, alloc), g in groups:
        out.setdefault(task, {})[alloc] = {float(r): float(v) for r, v in g.groupby("rate").rel.mean().items()
                                          if not math.isnan(v)}
    return out
