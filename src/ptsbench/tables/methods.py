"""The methods table: what each post-training sparsity method buys and what it costs.

Rows, per task and setting (a rate such as 70, or an N:M pattern such as 2:4, whose achieved
rate is printed with it, and the allocator that set the layers' counts: "70 ERK"), labelled from the criterion and reconstruction registries
(``runs.method_label``): Magnitude (magnitude mask at the allocator's counts, no reconstruction),
Magnitude + Block-wise (the paper's block reconstruction: sparse input, no error correction),
Wanda, SparseGPT (the reference: dense weights on the sparse model's input) and SparseGPT (dense
target). Columns: relative score x100 (mean over models of each model's seed-mean), its gain over
Magnitude (paired by model), wall time of the allocate + mask + reconstruct phases (mean s per
run), the process's peak host memory (max MB; a sweep worker's high-water mark, so an upper bound
when a worker ran several jobs) and device memory, and the number of cells.

Matched (docs/methods.md#decisions): in one (task, setting) every method is averaged over the
same cells, a cell being (model, dataset, rate, allocator, seeds) with an ok run for every method
of the group (a run that reads no calibration data stands for every calibration seed, and counts
once); cells some method lacks are left out, counted in a note and listed as gaps. A run whose
every reconstruction unit diverged is left out with a note.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from .base import TrackTable
from .cells import cell_estimate, units_of
from .evidence import JACKKNIFE, combine, make_plan
from .labels import task_label
from .matching import run_keys
from .runs import RunSet

METHOD_ORDER = (
    "Magnitude",
    "Magnitude + Block-wise",
    "Wanda",
    "SparseGPT",
    # beyond the paper and its first comparisons: the methods that came after
    "RIA",
    "Magnitude + DSnoT",
    "Wanda + DSnoT",
)
PAPER_ROWS = ("Magnitude", "Magnitude + Block-wise")
CELL = ("model", "dataset", "rate", "allocator", "seed_key")
COLUMNS = [
    "score",
    "gain vs Magnitude",
    "time s",
    "host peak MB",
    "device peak MB",
    "achieved %",
    "size (compressed / dense) %",
    "FLOP reduction x (theoretical)",
    "measured speed-up x",
    "cells",
]
TITLE = "Methods: score and cost of each method"


def paper_methods(runset: RunSet) -> RunSet:
    """The runs of the paper's tables: magnitude masks, unstructured, unrefined, paper reconstructions."""
    runs = runset.runs
    keep = (runs.criterion == "magnitude") & (runs.pattern == "unstructured") & (runs.refine == "none")
    keep &= runs.reconstruction != "sparsegpt"
    return dataclasses.replace(runset, runs=runs[keep].reset_index(drop=True))


def _order(method: str) -> tuple:
    base = method.split(" (")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def _method_runs(runset: RunSet) -> tuple[pd.DataFrame, int]:
    """Ok runs that are a methods row, with their setting; and how many were left out as diverged."""
    runs = runset.ok[runset.ok.method.notna()]
    diverged = (runs.units > 0) & (runs.diverged_units == runs.units)
    runs = runs[~diverged]
    # one allocation per group: methods are compared at the same per-layer counts (e.g. "70 ERK", "2:4 Uniform")
    setting = [
        f"{nm if isinstance(nm, str) else f'{r * 100:g}'} {alloc}"
        for nm, r, alloc in zip(runs.nm_setting, runs.rate, runs.allocator)
    ]
    return runs.assign(setting=setting), int(diverged.sum())


def _group_cells(task, setting, grp, own, methods) -> tuple[set, list[dict], str | None]:
    """(the cells every method has, gaps for cells a beyond-paper method ran and another lacks, note)."""
    cells = [set().union(*(k for k, m in zip(own, grp.method) if m == method)) for method in methods]
    common = set.intersection(*cells)
    # a Table 2/3 run is also a Magnitude or Magnitude + Block-wise run, and no gap of this table by itself
    beyond = [have for m, have in zip(methods, cells) if m not in PAPER_ROWS]
    scope = set.union(*beyond) if beyond else set.union(*cells)
    gaps = [
        {"table": "methods", "row": f"{task_label(task)} {setting} {m}", "kind": "missing", "task": task, "error": ""}
        | dict(zip(CELL, c))
        for m, have in zip(methods, cells)
        for c in sorted(scope - have)
    ]
    dropped = len(scope - common)
    note = f"{task_label(task)} {setting}: {dropped} cell(s) left out (not run by every method)" if dropped else None
    return common, gaps, note


def _method_rows(
    table: TrackTable, task, setting, kept: pd.DataFrame, methods, n_cells: int, speed: dict[tuple, str]
) -> list:
    stratum, rows = task_label(task), []
    base = cell_estimate(table.plan, kept[kept.method == "Magnitude"], stratum, "rel")
    for m in methods:
        sel = kept[kept.method == m]
        label = (stratum, setting, m)
        score = cell_estimate(table.plan, sel, stratum, "rel")
        gain = combine(lambda a, b: a - b, score, base)
        table.est[(label, "score")], table.est[(label, "gain vs Magnitude")] = score, gain
        costs = [sel.method_s.mean(), sel.host_mb.max(), sel.device_mb.max(), 100 * sel.achieved.mean()]
        deploy = [100 * sel.size_ratio.mean(), sel.flop_reduction.mean(), sel.speedup.mean()]
        speed[label] = speed_where(sel)
        rows.append((label, [score.value, gain.value, *costs, *deploy, float(n_cells)]))
    return rows


def speed_where(sel: pd.DataFrame) -> str:
    """Where the measured speed-up comes from: ``cpu: csr`` (devices: the sparse backends some layer ran
    on, "dense" when none beat the dense kernels), and how many of the runs were timed; "" when none."""
    timed = sel[sel.speedup.notna()]
    if timed.empty:
        return ""
    devices = ", ".join(sorted(set(timed.speed_device.dropna())))
    backends = ", ".join(sorted({b for bs in timed.speed_backends.dropna() for b in bs.split(",")})) or "dense"
    share = "" if len(timed) == len(sel) else f"; {len(timed)} of {len(sel)} runs"
    return f"{devices}: {backends}{share}"


def methods_table(runset: RunSet, kind: str = JACKKNIFE) -> TrackTable:
    runs, diverged = _method_runs(runset)
    table = TrackTable(
        "methods",
        TITLE,
        pd.DataFrame(columns=COLUMNS),
        pd.DataFrame(columns=COLUMNS),
        better={"score": "max", "gain vs Magnitude": "max", "time s": "min"},
        digits={
            "time s": 2,
            "host peak MB": 0,
            "device peak MB": 0,
            "achieved %": 1,
            "size (compressed / dense) %": 1,
            "FLOP reduction x (theoretical)": 2,
            "measured speed-up x": 2,
            "cells": 0,
        },
        plan=make_plan({(task_label(t), m) for t, m in units_of(runs, "task")}, kind),
    )
    values, notes = [], []
    speed: dict = {}
    for (task, setting), grp in runs.groupby(["task", "setting"], sort=True):
        methods = sorted(grp.method.unique(), key=_order)
        if ":" not in setting.split()[0] and set(methods) <= set(PAPER_ROWS):
            continue  # the paper's own methods only: Tables 2 and 3 show them
        grp = grp.drop_duplicates("digest")
        own = run_keys(grp, CELL)
        common, gaps, note = _group_cells(task, setting, grp, own, methods)
        table.gaps += gaps
        notes += [note] if note else []
        kept = grp[[bool(k & common) for k in own]]
        values += _method_rows(table, task, setting, kept, methods, len(common), speed)
        table.groups.append([label for label, _ in values[-len(methods) :]])
    if not values:
        return table
    index = pd.MultiIndex.from_tuples([v[0] for v in values], names=["task", "setting", "method"])
    table.values = pd.DataFrame([v[1] for v in values], index=index, columns=COLUMNS)
    table.flags = pd.DataFrame("", index=table.values.index, columns=COLUMNS)
    table.notes = [
        "score: relative score x100 (A_s/A_dense; GEN A_dense/A_s) over the matched cells, mean over models of each "
        "model's seed-mean; gain vs Magnitude paired by model; ± = half-width of the 95% interval over models "
        "(jackknife t), (n=k) where fewer than 2 models leave none; cells: model x rate x allocator x seed; time: "
        "allocate + mask (+ SparseGPT's select and update) + reconstruct phases; N:M settings keep layers whose "
        "input channels per group do not fit dense (achieved %); size: bytes of the pruned model as a sparse "
        "checkpoint (bitmask + non-zeros) over a plain state dict; FLOP reduction: theoretical, dense / non-zero "
        "multiply-accumulates of the prunable layers (what skipping every zero would save, not a timing); measured "
        "speed-up: dense / sparse kernels on the pruned model (eval.latency=true runs only; below 1 = sparse slower)",
        *notes,
        *(f"measured speed-up of {' '.join(k)}: {v}" for k, v in speed.items() if v),
    ]
    if diverged:
        table.notes.append(f"{diverged} run(s) left out: every reconstruction unit diverged")
    return table
