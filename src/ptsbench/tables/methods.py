"""The methods table (issue 14): what each post-training sparsity method buys and what it costs.

Rows, per task and setting (a rate such as 70, or an N:M pattern such as 2:4, whose achieved
rate is printed with it): Magnitude (magnitude mask at the allocator's counts, no reconstruction),
Magnitude + Block (the paper's block-wise reconstruction: sparse input, no error correction),
Wanda (its criterion, no reconstruction), SparseGPT (the reference: dense weights on the sparse
model's input) and SparseGPT (dense target) (reconstruction.target=dense: each layer reproduces the
dense layer's output on the dense model's input). Columns: relative score x100 (E over the
cells), its gain over Magnitude, wall time of the allocate + mask + reconstruct phases (mean s
per run), the process's peak host memory (max MB; a sweep worker's high-water mark, so an upper
bound when a worker ran several jobs) and device memory, and the number of cells.

Matched (docs/methods.md#decisions): in one (task, setting) every method is averaged over the same cells, a cell
being (model, dataset, rate, allocator, seed and calibration seed) with an ok run for every method of the group
(a run that reads no calibration data stands for every calibration seed, as in Tables 2 and 3);
cells some method lacks are left out, counted in a note and listed as gaps. The calibration size
is not part of a cell: runs that read no calibration data (Magnitude with a data-free
allocator) match whatever size the other methods used. Other reconstruction variants (input,
error correction, granularity) belong to Table 3 and are not rows here.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd

from .base import TrackTable
from .compare import cell as cell_stats
from .compare import expand_seed_free
from .frame import RunSet, task_label

METHOD_ORDER = ("Magnitude", "Magnitude + Block", "Wanda", "SparseGPT")
PAPER_ROWS = ("Magnitude", "Magnitude + Block")
CELL = ("model", "dataset", "rate", "allocator", "seed_key")


def paper_methods(runset: RunSet) -> RunSet:
    """The runs of the paper's tables: magnitude masks, unstructured, paper reconstructions."""
    runs = runset.runs
    keep = (runs.criterion == "magnitude") & (runs.pattern == "unstructured") & (runs.reconstruction != "sparsegpt")
    return dataclasses.replace(runset, runs=runs[keep].reset_index(drop=True))


def method_of(rec: dict) -> dict | None:
    """Method label, setting and costs of one record; None for a run that is no row here."""
    cfg = rec.get("config") or {}
    sp, rc = cfg.get("sparsity") or {}, cfg.get("reconstruction") or {}
    criterion, recon = sp.get("criterion", "magnitude"), rc.get("name", "none")
    if recon == "none":
        label = {"magnitude": "Magnitude", "wanda": "Wanda"}.get(criterion, criterion.title())
    elif recon == "sparsegpt":
        label = "SparseGPT (dense target)" if rc.get("target", "sparse") == "dense" else "SparseGPT"
    elif recon == "block" and rc.get("input", "sparse") == "sparse" and not rc.get("error_correction", False):
        label = f"{criterion.title()} + Block"
    else:
        return None
    if sp.get("group", "layer") == "row":
        label += " (row)"
    nm = sp.get("pattern", "unstructured") == "nm"
    timing, memory = rec.get("timing") or {}, rec.get("memory") or {}
    return {
        "method": label,
        "setting": f"{sp.get('n', 2)}:{sp.get('m', 4)}" if nm else None,
        "achieved": (rec.get("sparsity") or {}).get("achieved", math.nan),
        "time_s": sum(float(timing.get(p, 0.0)) for p in ("allocate", "mask", "reconstruct")),
        "host_mb": memory.get("host_peak_mb", math.nan),
        "device_mb": memory.get("device_peak_mb", math.nan),
        **deploy_facts(rec),
    }


def deploy_facts(rec: dict) -> dict:
    """Size ratio (compressed / dense bytes), theoretical FLOP reduction and measured speed-up of one
    record; NaN / None where the record predates them or was not timed (``eval.latency``)."""
    size, flops, lat = rec.get("size_bytes") or {}, rec.get("flops") or {}, rec.get("latency") or {}
    return {
        "size_ratio": size["compressed"] / size["dense"] if size.get("dense") else math.nan,
        "flop_reduction": float(flops.get("reduction", math.nan)),
        "speedup": float(lat.get("speedup", math.nan)),
        "speed_device": lat.get("device_name") or lat.get("device"),
        "speed_backends": ",".join(sorted(b for b in (lat.get("backends") or {}) if b != "dense")) or None,
    }


def speedup_label(sel: pd.DataFrame) -> str:
    """``1.08x (cpu, csr)``: mean measured speed-up over the timed runs, their devices and the sparse
    backends any layer ran on ("dense" when none beat the dense kernels); "—" when none was timed."""
    timed = sel[sel.speedup.notna()]
    if timed.empty:
        return "—"
    devices = ", ".join(sorted(set(timed.speed_device.dropna())))
    backends = ", ".join(sorted({b for bs in timed.speed_backends.dropna() for b in bs.split(",")})) or "dense"
    share = "" if len(timed) == len(sel) else f"; {len(timed)} of {len(sel)} runs"
    return f"{timed.speedup.mean():.2f}x ({devices}, {backends}{share})"


def _method_runs(runset: RunSet) -> pd.DataFrame:
    rows = []
    for run in runset.ok.itertuples(index=False):
        try:
            info = method_of(json.loads(open(run.path).read()))
        except (OSError, ValueError):
            continue
        if info is not None:
            setting = info.pop("setting") or f"{run.rate * 100:g}"
            rows.append(
                {**{c: getattr(run, c) for c in (*CELL, "task", "rel", "seed_free")}, "setting": setting, **info}
            )
    return pd.DataFrame(rows)


def _order(method: str) -> tuple:
    base = method.split(" (")[0]
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def methods_table(runset: RunSet) -> TrackTable:
    runs = _method_runs(runset)
    values, notes, gaps, groups = [], [], [], []
    columns = [
        "score",
        "gain vs Magnitude",
        "time s",
        "host peak MB",
        "device peak MB",
        "achieved %",
        "size (compressed / dense) %",
        "FLOP reduction x (theoretical)",
        "measured speed-up (device, backend)",
        "cells",
    ]
    if runs.empty:
        frame = pd.DataFrame(columns=columns)
        return TrackTable("methods", "Methods: score and cost of each method (issue 14)", frame, frame.copy())
    boot, n_runs = {}, {}
    for (task, setting), grp in runs.groupby(["task", "setting"], sort=True):
        methods = sorted(grp.method.unique(), key=_order)
        # a run that reads no calibration data stands for every calibration seed of its partners
        grp = expand_seed_free(grp.assign(_row=grp.method + "|" + grp.allocator.astype(str)), "_row")
        if ":" not in setting and set(methods) <= set(PAPER_ROWS):
            continue  # the paper's own methods only: Tables 2 and 3 show them
        cells = [set(map(tuple, grp[grp.method == m][list(CELL)].astype(str).values)) for m in methods]
        common = set.intersection(*cells)
        # a comparison's cells are those a method beyond the paper's ran: every Table 2/3 run is
        # also a Magnitude or Magnitude + Block run, and is no gap of this table by itself
        beyond = [have for m, have in zip(methods, cells) if m not in PAPER_ROWS]
        scope = set.union(*beyond) if beyond else set.union(*cells)
        for m, have in zip(methods, cells):  # a cell another method ran but this one did not
            for cell in sorted(scope - have):
                gaps.append(
                    {
                        "table": "methods",
                        "row": f"{task_label(task)} {setting} {m}",
                        "kind": "missing",
                        "task": task,
                        "error": "",
                        **dict(zip(CELL, cell)),
                    }
                )
        dropped = len(scope - common)
        if dropped:
            notes.append(f"{task_label(task)} {setting}: {dropped} cell(s) left out (not run by every method)")
        keyed = grp.assign(_cell=list(map(tuple, grp[list(CELL)].astype(str).values)))
        keyed = keyed[keyed._cell.isin(common)]
        base = keyed[keyed.method == "Magnitude"].rel.mean()
        group = []
        for m in methods:
            sel = keyed[keyed.method == m]
            label = (task_label(task), setting, m)
            group.append(label)
            _, draws, n, _ = cell_stats(sel, "rel", f"methods|{task}|{setting}")
            boot[(label, "score")], n_runs[(label, "score")] = 100 * draws, n
            values.append(
                (
                    label,
                    [
                        100 * sel.rel.mean(),
                        100 * (sel.rel.mean() - base),
                        sel.time_s.mean(),
                        sel.host_mb.max(),
                        sel.device_mb.max(),
                        100 * sel.achieved.mean(),
                        100 * sel.size_ratio.mean(),
                        sel.flop_reduction.mean(),
                        speedup_label(sel),
                        float(sel._cell.nunique()),
                    ],
                )
            )
        groups.append(group)
    index = pd.MultiIndex.from_tuples([v[0] for v in values], names=["task", "setting", "method"])
    frame = pd.DataFrame([v[1] for v in values], index=index, columns=columns)
    notes.insert(
        0,
        "score: E(A_s/A_dense) x100 over the matched cells (GEN: A_dense/A_s), ± = half-width of the 95% "
        "bootstrap interval over its runs (models x calibration seeds); cells: model x rate x allocator x seed; "
        "time: allocate + mask + reconstruct phases; N:M settings keep layers whose input channels per group do not "
        "fit dense (achieved %); size: bytes of the pruned model as a sparse checkpoint (bitmask + non-zeros) over a "
        "plain state dict; FLOP reduction: theoretical, dense / non-zero multiply-accumulates of the prunable layers "
        "(what skipping every zero would save, not a timing); measured speed-up: dense / sparse kernels on the "
        "pruned model (eval.latency=true runs only; below 1 = sparse slower), with the device and the sparse "
        "backends some layer ran on",
    )
    return TrackTable(
        "methods",
        "Methods: score and cost of each method (issue 14)",
        frame,
        pd.DataFrame("", index=frame.index, columns=frame.columns),
        better={"score": "max", "gain vs Magnitude": "max", "time s": "min"},
        notes=notes,
        gaps=gaps,
        groups=groups,
        digits={
            "time s": 2,
            "host peak MB": 0,
            "device peak MB": 0,
            "achieved %": 1,
            "size (compressed / dense) %": 1,
            "FLOP reduction x (theoretical)": 2,
            "cells": 0,
        },
        boot=boot,
        n=n_runs,
    )
