"""Table 3 — reconstruction techniques track (paper §3.1 ②, Eqs. 3-4).

Rule: every reconstructed run is paired with its reconstruction=none twin, the run whose config
differs from it only in the reconstruction subtree (or also in the seeds, when the twin read no
calibration data and so is the same run for every seed); no twin: a 'no-baseline' gap.
Its gain R = A_{s,r} - A_s becomes R/A_dense, or for lower-is-better metrics (GEN FID)
exp(A_dense/R) when R < 0 and 0 when R >= 0 (docs/methods.md#decisions; the count of runs where FID got worse is
printed). Each aspect varies one knob around one baseline setting (default the paper's: block
granularity, sparse input, no error correction; ``--recon-baseline``): the error-correction
rows are block + sparse input with correction on/off, the input rows block + no correction
with sparse/dense input, the granularity rows sparse input + no correction at single/layer/
block. Rows are matched within an aspect (``tables.compare``); per task, the gains at each rate
are averaged, MS = their quadratic mean, OM_recon = the quadratic mean over tasks. Compare rows
only within one aspect (paper §5.1.2).
"""

from __future__ import annotations

import math

import pandas as pd

from ..metrics import ms, om_recon, recon_gain
from .base import TrackTable, coverage_gaps, flag_task_rate
from .compare import compare_task_rate, held_fixed, with_rest
from .frame import RunSet, ordered_tasks

# aspect -> (run column, [(value, row label)], config knobs the aspect varies)
ASPECTS = {
    "error correction": (
        "error_correction",
        [(True, "w/ Correction"), (False, "w/o Correction")],
        ("reconstruction.error_correction",),
    ),
    "input": ("input", [("sparse", "Sparse Input"), ("dense", "Dense Input")], ("reconstruction.input",)),
    "granularity": (
        "granularity",
        [("single", "Single"), ("layer", "Layer-wise"), ("block", "Block-wise")],
        ("reconstruction.name", "reconstruction.unitwiseity"),
    ),
}
ASPECT_COLS = [a[0] for a in ASPECTS.values()]
DEFAULT_BASELINE = {"granularity": "block", "input": "sparse", "error_correction": False}
COORDS = ["task", "model", "dataset", "allocator", "rate", "seed"]


def parse_baseline(text: str | None) -> dict:
    """'granularity=block,input=sparse,error_correction=false' -> the baseline dict (ValueError naming the knob)."""
    base = dict(DEFAULT_BASELINE)
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in base:
            raise ValueError(f"--recon-baseline knob '{key}'; valid knobs: {', '.join(base)}")
        choices = {str(v).lower(): v for v, _ in ASPECTS[next(a for a, s in ASPECTS.items() if s[0] == key)][1]}
        if value.strip().lower() not in choices:
            raise ValueError(f"--recon-baseline {key}='{value}'; valid choices: {', '.join(choices)}")
        base[key] = choices[value.strip().lower()]
    return base


def paired_gains(runset: RunSet) -> tuple[pd.DataFrame, list[dict]]:
    """Reconstructed ok runs with 'gain' (and 'R') columns; gaps for runs without a twin or with
    a non-finite term."""
    ok = runset.ok
    none = ok[ok.reconstruction == "none"]
    recon = ok[ok.reconstruction != "none"].copy()
    twins = none.drop_duplicates("baseline_key").set_index("baseline_key")["sparse"]
    free = none[none.seed_free.astype(bool)]
    seedless = free.drop_duplicates("baseline_key_seedless").set_index("baseline_key_seedless")["sparse"]
    gains, deltas, gaps = [], [], []
    for _, run in recon.iterrows():
        base = twins.get(run.baseline_key)
        if base is None:  # a twin that read no calibration data is the same run for every seed
            base = seedless.get(run.baseline_key_seedless)
        cause = None
        if base is None:
            cause = ("no-baseline", "no reconstruction=none run that differs only in the reconstruction subtree")
            gain = delta = math.nan
        else:
            delta = float(run["sparse"]) - float(base)
            gain = recon_gain(run["sparse"], base, run["dense"], bool(run.higher_is_better))
            if not math.isfinite(gain):
                cause = ("non-finite", f"gain term {gain} (sparse {run['sparse']}, none {base}, dense {run['dense']})")
        if cause:
            gaps.append(
                {
                    "table": "table3",
                    "row": run.reconstruction,
                    "kind": cause[0],
                    "error": cause[1],
                    "reconstruction": run.reconstruction,
                    **{c: run[c] for c in [*COORDS, *ASPECT_COLS]},
                }
            )
            gain = math.nan
        gains.append(gain)
        deltas.append(delta)
    recon["gain"], recon["R"] = gains, deltas
    return recon, gaps


def _at_baseline(frame: pd.DataFrame, col: str, baseline: dict) -> pd.DataFrame:
    keep = [all(row[c] == baseline[c] for c in ASPECT_COLS if c != col) for _, row in frame.iterrows()]
    return frame[keep] if len(frame) else frame


def reconstruction_table(runset: RunSet, matched: bool = True, baseline: dict | None = None) -> TrackTable:
    baseline = {**DEFAULT_BASELINE, **(baseline or {})}
    recon, twin_gaps = paired_gains(runset)
    failed = runset.failed[runset.failed.reconstruction != "none"]
    tasks = ordered_tasks(set(recon.task) | set(failed.task))
    parts, flag_parts, gaps, cells, boot, n_of, unranked, notes = [], [], [], [], {}, {}, set(), []
    in_aspect = pd.Series(False, index=recon.index)
    for aspect, (col, choices, knobs) in ASPECTS.items():
        labels = dict(choices)
        ok_a = _at_baseline(recon[recon[col].isin(labels)], col, baseline)
        in_aspect[ok_a.index] = True
        ok_a = with_rest(ok_a.assign(technique=ok_a[col].map(labels)), knobs).dropna(subset=["gain"])
        failed_a = _at_baseline(failed[failed[col].isin(labels)], col, baseline)
        failed_a = failed_a.assign(technique=failed_a[col].map(labels))
        rows = [label for _, label in choices]  # all techniques listed; one without runs is a gap
        grid = compare_task_rate(
            ok_a, "technique", rows, tasks, "gain", ms, om_recon, "OM_recon", table=f"table3|{aspect}", matched=matched
        )
        aspect_gaps = coverage_gaps("table3", ok_a, failed_a, ["technique"], COORDS)
        gaps += aspect_gaps
        parts.append(grid.values)
        flag_parts.append(flag_task_rate(grid.values, grid.where, aspect_gaps, "technique", incomplete=not matched))
        cells += [{**c, "aspect": aspect} for c in grid.cells]
        boot.update(grid.boot)
        n_of.update(grid.n)
        if not matched:
            unranked |= grid.unmatched_rows
        base_text = ", ".join(f"{k}={v}" for k, v in baseline.items() if k != col)
        notes += [f"{aspect}: rows vary {', '.join(knobs)} around {base_text}"]
        notes += [f"{aspect}: {n}" for n in grid.notes + held_fixed(grid.used, knobs)]
    values = pd.concat(parts) if parts else pd.DataFrame()
    flags = pd.concat(flag_parts).reindex(columns=values.columns, fill_value="") if parts else pd.DataFrame()
    values.index.name = "technique"
    head = [
        "R = A_{s,r} - A_s against the run's reconstruction=none twin (Eq. 3); cells: E(R/A_dense) x100; "
        "GEN (lower-is-better) term exp(A_dense/R) when R < 0, 0 when R >= 0 (docs/methods.md#decisions bound of Eq. 4's "
        "exp(A/R), which is inf for a tiny worsening); OM_recon = quadratic mean of the tasks' MS (Eq. 4); "
        "± = half-width of the 95% bootstrap interval; compare rows within one aspect only"
    ]
    lower = recon[~recon.higher_is_better.astype(bool)]
    if len(lower):
        worse = int((lower.R >= 0).sum())
        head.append(f"GEN: reconstruction made the metric worse (R >= 0, term 0) in {worse} of {len(lower)} run(s)")
    off = int((~in_aspect).sum())
    if off:
        head.append(f"{off} reconstructed run(s) are off every aspect's baseline and are not in this table")
    if twin_gaps:
        head.append(f"{len(twin_gaps)} reconstructed run(s) left out: no twin or a non-finite term (see gaps)")
    if values.empty or values.isna().all().all():
        head.append("no reconstructed runs")
    better = {c: "max" for c in values.columns if not values[c].isna().all()}
    return TrackTable(
        "table3_reconstruction",
        "Table 3: reconstruction techniques (gain over no reconstruction)",
        values,
        flags,
        better,
        head + notes,
        twin_gaps + gaps,
        groups=[[label for _, label in choices] for _, choices, _ in ASPECTS.values()],
        cells=cells,
        boot=boot,
        n=n_of,
        unranked=unranked,
    )
