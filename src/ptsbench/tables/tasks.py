"""Table 4 — sparsification potential of different tasks (paper §3.2 ⑤, Eq. 8).

Rule: per task, average the relative score over all its models and datasets at each rate
(runs without reconstruction, the reference allocator, as in the paper where this table
repeats the L2Norm rows of Table 2); OM_task = the quadratic mean over rates. The paper's
three tasks are always listed; one without runs is a gap.
"""
from __future__ import annotations

import pandas as pd

from ..metrics import mean, om_task
from .architecture import model_track_runs
from .base import TrackTable, coverage_gaps, flag_cells, rate_label
from .frame import RunSet, ordered_tasks, task_label


def tasks_table(runset: RunSet, allocator: str = "l2norm") -> TrackTable:
    ok, failed = model_track_runs(runset, allocator)
    tasks = ordered_tasks(set(ok.task) | set(failed.task))
    rates = sorted(set(ok.rate) | set(failed.rate))
    rows = {}
    for task in tasks:
        t = ok[ok.task == task]
        per_rate = {r: mean(t[t.rate == r].rel) for r in rates}
        rows[task_label(task)] = {**{rate_label(r): 100 * per_rate[r] for r in rates},
                                  "OM_task": 100 * om_task(per_rate)}
    columns = [rate_label(r) for r in rates] + ["OM_task"]
    values = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
    values.index.name = "task"
    gaps = coverage_gaps("table4", ok, failed, ["task"], ["rate", "seed"], ["model", "dataset"])
    flags = flag_cells(values, gaps, lambda g: task_label(g["task"]), lambda g: rate_label(g["rate"]))
    for gap in gaps:
        row = task_label(gap["task"])
        if row in flags.index and not pd.isna(values.at[row, "OM_task"]):
            flags.at[row, "OM_task"] = "*"
    notes = [f"reconstruction=none, allocator={allocator}; per-rate E(relative score) x100 over a task's models "
             "and datasets; OM_task = quadratic mean over rates (Eq. 8)"]
    empty = [task_label(t) for t in tasks if ok[ok.task == t].empty]
    if empty:
        notes.append(f"no runs for {', '.join(empty)} with allocator={allocator} and reconstruction=none")
    return TrackTable("table4_tasks", "Table 4: sparsification potential of tasks", values, flags,
                      {c: "max" for c in columns}, notes, gaps)
