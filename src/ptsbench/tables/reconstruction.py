"""Table 3 — reconstruction techniques track (paper §3.1 ②, Eqs. 3-4).

Rule: every reconstructed run is paired with its reconstruction=none twin (same config apart
from the reconstruction subtree; if none exists, the twin with the same task, model, dataset,
allocator, rate and seed, noted). Its gain R = A_{s,r} - A_s becomes R/A_dense (or
exp(A_dense/R) for lower-is-better metrics, as Eq. 4 writes it). Rows pool the runs that
share one technique: error correction on/off, sparse/dense unit input, single/layer/block
granularity; per task, the gains at each rate are averaged, MS = their quadratic mean, and
OM_recon = the quadratic mean over tasks. Compare rows only within one aspect (paper §5.1.2).
"""
from __future__ import annotations

import pandas as pd

from ..metrics import ms, om_recon, recon_gain
from .base import TrackTable, coverage_gaps, flag_task_rate, task_rate_table
from .frame import RunSet, ordered_tasks

# aspect -> (run column, [(value, row label)])
ASPECTS = {
    "error correction": ("error_correction", [(True, "w/ Correction"), (False, "w/o Correction")]),
    "input": ("input", [("sparse", "Sparse Input"), ("dense", "Dense Input")]),
    "granularity": ("granularity", [("single", "Single"), ("layer", "Layer-wise"), ("block", "Block-wise")]),
}
ASPECT_COLS = [col for col, _ in ASPECTS.values()]
TWIN_KEY = ["task", "model", "dataset", "allocator", "rate", "seed"]
COORDS = ["task", "model", "dataset", "allocator", "rate", "seed"]


def paired_gains(runset: RunSet) -> tuple[pd.DataFrame, list[dict], int]:
    """Reconstructed ok runs with a 'gain' column; gaps for runs without a twin; count of twins
    matched on the loose key only."""
    ok = runset.ok
    none = ok[ok.reconstruction == "none"]
    recon = ok[ok.reconstruction != "none"].copy()
    exact = none.drop_duplicates("baseline_key").set_index("baseline_key")["sparse"]
    loose = none.groupby(TWIN_KEY, dropna=False)["sparse"].mean()
    gains, gaps, n_loose = [], [], 0
    for _, run in recon.iterrows():
        base = exact.get(run.baseline_key)
        if base is None:
            key = tuple(run[c] for c in TWIN_KEY)
            base = loose.get(key) if key in loose.index else None
            n_loose += base is not None
        if base is None:
            gaps.append({"table": "table3", "row": run.reconstruction, "kind": "no-baseline",
                         "error": "no reconstruction=none run to compare with", "reconstruction": run.reconstruction,
                         **{c: run[c] for c in [*COORDS, *ASPECT_COLS]}})
            gains.append(float("nan"))
            continue
        gains.append(recon_gain(run["sparse"], base, run["dense"], bool(run.higher_is_better)))
    recon["gain"] = gains
    return recon, gaps, n_loose


def reconstruction_table(runset: RunSet) -> TrackTable:
    recon, twin_gaps, n_loose = paired_gains(runset)
    failed = runset.failed[runset.failed.reconstruction != "none"]
    tasks = ordered_tasks(set(recon.task) | set(failed.task))
    parts, flag_parts, gaps = [], [], []
    for aspect, (col, choices) in ASPECTS.items():
        labels = dict(choices)
        ok_a = recon[recon[col].isin(labels)].assign(technique=lambda d: d[col].map(labels))
        failed_a = failed[failed[col].isin(labels)].assign(technique=lambda d: d[col].map(labels))
        rows = [label for _, label in choices]  # all techniques listed; one without runs is a gap
        ok_a = ok_a.dropna(subset=["gain"])  # runs without a twin are reported once, as 'no-baseline'
        values, where = task_rate_table(ok_a, "technique", rows, tasks, "gain", ms, om_recon, "OM_recon")
        others = [c for c, _ in ASPECTS.values() if c != col]
        aspect_gaps = coverage_gaps("table3", ok_a, failed_a, ["technique"], [*COORDS, *others])
        values_of = {label: value for value, label in choices}
        aspect_gaps = [g for g in aspect_gaps if not _is_twin_gap({**g, col: values_of[g["technique"]]}, twin_gaps)]
        gaps += aspect_gaps
        parts.append(values)
        flag_parts.append(flag_task_rate(values, where, aspect_gaps, "technique"))
    values = pd.concat(parts) if parts else pd.DataFrame()
    flags = pd.concat(flag_parts).reindex(columns=values.columns, fill_value="") if parts else pd.DataFrame()
    values.index.name = "technique"
    notes = ["R = A_{s,r} - A_s against the matching reconstruction=none run (Eq. 3); cells: E(R/A_dense) x100 "
             "(exp(A_dense/R) for lower-is-better metrics); OM_recon = quadratic mean of the tasks' MS (Eq. 4); "
             "compare rows within one aspect only"]
    if twin_gaps:
        notes.append(f"{len(twin_gaps)} reconstructed run(s) have no reconstruction=none twin and are left out")
    if n_loose:
        notes.append(f"{n_loose} run(s) matched a reconstruction=none twin that differs in calibration/other knobs")
    if values.empty:
        notes.append("no reconstructed runs")
    better = {c: "max" for c in values.columns if not values[c].isna().all()}
    return TrackTable("table3_reconstruction", "Table 3: reconstruction techniques (gain over no reconstruction)",
                      values, flags, better, notes, twin_gaps + gaps,
                      groups=[[label for _, label in choices] for _, choices in ASPECTS.values()])


def _is_twin_gap(gap: dict, twin_gaps: list[dict]) -> bool:
    """A run left out for lack of a baseline is reported once, as 'no-baseline'."""
    return gap["kind"] == "missing" and any(all(gap.get(c) == t.get(c) for c in [*COORDS, *ASPECT_COLS])
                                            for t in twin_gaps)
