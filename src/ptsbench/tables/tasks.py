"""Table 4 — sparsification potential of different tasks (paper §3.2 ⑤, Eq. 8).

Rule: per task, average the relative score over its models at each rate (each model's seeds and
datasets first; runs without reconstruction, the reference allocator, as in the paper where this
table repeats the L2Norm rows of Table 2); OM_task = the signed quadratic mean over rates. The
paper's three tasks are always listed; one without runs is a gap. Tasks are matched on (rate,
seed) (``tables.matching.match_rates``). Tasks hold different models, so comparing two tasks
resamples each task's models independently (``tables.evidence``).
"""

from __future__ import annotations

import pandas as pd

from .allocation import INTERVAL_NOTE
from .architecture import model_track_runs
from .base import TrackTable, coverage_gaps, flag_cells, rate_label
from .cells import cell_estimate, tidy
from .evidence import JACKKNIFE, make_plan, signed_qmean
from .knobs import held_fixed
from .labels import ordered_tasks, task_label
from .matching import keep_main_setting, match_rates
from .runs import RunSet


def _task_row(table: TrackTable, t: pd.DataFrame, label: str, rates) -> dict:
    per_rate = [cell_estimate(table.plan, t[t.rate == r], label, "rel") for r in rates]
    table.est.update({(label, rate_label(r)): e for r, e in zip(rates, per_rate)})
    table.est[(label, "OM_task")] = signed_qmean(table.plan, per_rate)
    for col, r in [(rate_label(r), r) for r in rates] + [("OM_task", None)]:
        if table.est[(label, col)].units:
            table.cells.append(tidy(table.plan, table.est[(label, col)], "table4", label, label, col, r))
    return {col: table.est[(label, col)].value for col in [*map(rate_label, rates), "OM_task"]}


def tasks_table(runset: RunSet, allocator: str = "l2norm", matched: bool = True, kind: str = JACKKNIFE) -> TrackTable:
    ok_all, failed = model_track_runs(runset, allocator)
    tasks = ordered_tasks(set(ok_all.task) | set(failed.task))
    ok, setting_notes = keep_main_setting(ok_all, "task")
    ok, unmatched, match_notes = match_rates(ok, "task", matched)
    rates = sorted(set(ok.rate) | (set() if matched else set(failed.rate)))
    columns = [rate_label(r) for r in rates] + ["OM_task"]
    units = {(task_label(t), m) for t, m in zip(ok.task, ok.model)}
    table = TrackTable(
        "table4_tasks",
        "Table 4: sparsification potential of tasks",
        pd.DataFrame(),
        pd.DataFrame(),
        {c: "max" for c in columns},
        plan=make_plan(units, kind),
        unranked=set() if matched else {task_label(t) for t in unmatched},
    )
    rows = {task_label(t): _task_row(table, ok[ok.task == t], task_label(t), rates) for t in tasks}
    values = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
    values.index.name = "task"
    table.values = values
    table.gaps = coverage_gaps(
        "table4", ok_all, failed, ["task"], ["rate", "seed"], ["model", "dataset"], column_cols=("rate",)
    )
    table.flags = flag_cells(
        values, table.gaps, lambda g: task_label(g["task"]), lambda g: rate_label(g["rate"]), incomplete=not matched
    )
    for gap in table.gaps if not matched else []:
        row = task_label(gap["task"])
        if row in table.flags.index and not pd.isna(values.at[row, "OM_task"]):
            table.flags.at[row, "OM_task"] = "*"
    fixed_notes, table.fixed = held_fixed(ok, ("model", "dataset", "task", "calib"), "table4")
    table.notes = [
        f"reconstruction=none, allocator={allocator}; per-rate E(relative score) x100 over a task's models "
        "(each model's seeds first); OM_task = signed quadratic mean over rates (Eq. 8); " + INTERVAL_NOTE
    ]
    table.notes += setting_notes + match_notes + fixed_notes
    empty = [task_label(t) for t in tasks if ok[ok.task == t].empty]
    if empty:
        table.notes.append(f"no runs for {', '.join(empty)} with allocator={allocator} and reconstruction=none")
    return table
