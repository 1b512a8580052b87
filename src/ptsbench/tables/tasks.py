"""Table 4 — sparsification potential of different tasks (paper §3.2 ⑤, Eq. 8).

Rule: per task, average the relative score over all its models and datasets at each rate
(runs without reconstruction, the reference allocator, as in the paper where this table
repeats the L2Norm rows of Table 2); OM_task = the quadratic mean over rates. The paper's
three tasks are always listed; one without runs is a gap. Tasks are matched on (rate, seed):
each is averaged over the same rates and seeds (``tables.compare.match_rates``).
"""

from __future__ import annotations

import pandas as pd

from ..metrics import om_task
from .architecture import model_track_runs
from .base import TrackTable, coverage_gaps, flag_cells, rate_label
from .compare import boot_qmean, cell, held_fixed, match_rates, tidy
from .frame import RunSet, ordered_tasks, task_label


def tasks_table(runset: RunSet, allocator: str = "l2norm", matched: bool = True) -> TrackTable:
    ok, failed = model_track_runs(runset, allocator)
    tasks = ordered_tasks(set(ok.task) | set(failed.task))
    ok_all = ok
    ok, unmatched, match_notes = match_rates(ok, "task", matched)
    rates = sorted(set(ok.rate) | (set() if matched else set(failed.rate)))
    rows, cells, boot, n_of = {}, [], {}, {}
    for task in tasks:
        t = ok[ok.task == task]
        label = task_label(task)
        per_rate, per_boot = {}, []
        for r in rates:
            value, draws, n, models = cell(t[t.rate == r], "rel", f"table4|{r}")
            per_rate[r], boot[(label, rate_label(r))], n_of[(label, rate_label(r))] = value, draws * 100, n
            per_boot.append(draws)
            if n:
                cells.append(tidy("table4", label, label, rate_label(r), r, 100 * value, draws * 100, n, models))
        rows[label] = {**{rate_label(r): 100 * per_rate[r] for r in rates}, "OM_task": 100 * om_task(per_rate)}
        boot[(label, "OM_task")], n_of[(label, "OM_task")] = boot_qmean(per_boot) * 100, len(t)
        cells.append(
            tidy(
                "table4",
                label,
                label,
                "OM_task",
                None,
                rows[label]["OM_task"],
                boot[(label, "OM_task")],
                len(t),
                sorted(set(t.model)),
            )
        )
    columns = [rate_label(r) for r in rates] + ["OM_task"]
    values = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
    values.index.name = "task"
    gaps = coverage_gaps("table4", ok_all, failed, ["task"], ["rate", "seed"], ["model", "dataset"])
    flags = flag_cells(
        values, gaps, lambda g: task_label(g["task"]), lambda g: rate_label(g["rate"]), incomplete=not matched
    )
    for gap in gaps if not matched else []:
        row = task_label(gap["task"])
        if row in flags.index and not pd.isna(values.at[row, "OM_task"]):
            flags.at[row, "OM_task"] = "*"
    notes = [
        f"reconstruction=none, allocator={allocator}; per-rate E(relative score) x100 over a task's models "
        "and datasets; OM_task = quadratic mean over rates (Eq. 8); ± = half-width of the 95% bootstrap interval"
    ]
    notes += match_notes + held_fixed(ok, ("model", "dataset", "task", "calib"))
    empty = [task_label(t) for t in tasks if ok[ok.task == t].empty]
    if empty:
        notes.append(f"no runs for {', '.join(empty)} with allocator={allocator} and reconstruction=none")
    return TrackTable(
        "table4_tasks",
        "Table 4: sparsification potential of tasks",
        values,
        flags,
        {c: "max" for c in columns},
        notes,
        gaps,
        cells=cells,
        boot=boot,
        n=n_of,
        unranked=set() if matched else {task_label(t) for t in unmatched},
    )
