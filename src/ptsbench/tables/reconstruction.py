"""Table 3 — reconstruction techniques track (paper §3.1 ②, Eqs. 3-4).

Rule: every reconstructed run is paired with its reconstruction=none twin, the run whose setting
differs from it only in the reconstruction subtree (or also in the seeds, when the twin read no
calibration data and so is the same run for every seed); no twin: a 'no-baseline' gap. Its gain
R = A_{s,r} - A_s becomes R/A_dense, or for lower-is-better metrics (GEN FID) exp(A_dense/R) when
R < 0 and 0 when R >= 0 (docs/methods.md#decisions); beside the GEN MS, the runs where FID got
worse are counted with their mean -R/A_dense, so GEN harm is not hidden by the bounded term. A
run in which every reconstruction unit diverged (each restored to its unreconstructed weights) is
no reconstruction and is left out with a note; runs with some diverged units stay and are counted
in the notes. Each aspect varies one knob around one baseline setting (default the paper's: block
granularity, sparse input, no error correction; ``--recon-baseline``). Rows are matched within an
aspect (``tables.matching``); per task, the gains at each rate are averaged over models (seeds
first), MS = their signed quadratic mean, OM_recon = the signed quadratic mean over tasks. Compare
rows only within one aspect (paper §5.1.2).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..metrics import recon_gain
from .allocation import INTERVAL_NOTE
from .base import TrackTable, coverage_gaps, flag_task_rate
from .cells import units_of
from .evidence import JACKKNIFE, make_plan
from .grid import task_rate_grid
from .knobs import held_fixed
from .labels import ordered_tasks, task_label
from .matching import with_rest
from .runs import RunSet

# aspect -> (run column, [(value, row label)], config knobs the aspect varies)
# aspect -> (column, [(value, label)], the knobs that must match between compared runs)
ASPECTS: dict[str, tuple[str, list[tuple[Any, str]], tuple[str, ...]]] = {
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
GEN_WORSE, GEN_WORSE_MEAN = "GEN worse runs", "GEN worse mean"


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


def _gap(run, kind: str, error: str) -> dict:
    return {
        "table": "table3",
        "row": run.reconstruction,
        "kind": kind,
        "error": error,
        "reconstruction": run.reconstruction,
        **{c: run[c] for c in [*COORDS, *ASPECT_COLS]},
    }


def paired_gains(runset: RunSet) -> tuple[pd.DataFrame, list[dict]]:
    """Reconstructed ok runs with 'gain' and 'R' columns; gaps for runs without a twin, with a
    non-finite term, or whose every unit diverged (those get no gain)."""
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
        delta = gain = math.nan
        if run.units and run.diverged_units == run.units:
            gaps.append(_gap(run, "diverged", f"all {run.units} reconstruction units diverged and were restored"))
        elif base is None:
            gaps.append(_gap(run, "no-baseline", "no reconstruction=none run that differs only in the reconstruction"))
        else:
            delta = float(run["sparse"]) - float(base)
            gain = recon_gain(run["sparse"], base, run["dense"], bool(run.higher_is_better))
            if not math.isfinite(gain):
                term = f"gain term {gain} (sparse {run['sparse']}, none {base}, dense {run['dense']})"
                gaps.append(_gap(run, "non-finite", term))
                gain = math.nan
        gains.append(gain)
        deltas.append(delta)
    recon["gain"], recon["R"] = gains, deltas
    return recon, gaps


def _at_baseline(frame: pd.DataFrame, col: str, baseline: dict) -> pd.DataFrame:
    keep = [all(row[c] == baseline[c] for c in ASPECT_COLS if c != col) for _, row in frame.iterrows()]
    return frame[keep] if len(frame) else frame


def _gen_worse(values: pd.DataFrame, used: pd.DataFrame) -> pd.DataFrame:
    """Insert, beside GEN MS, the runs where FID got worse (R >= 0: term 0) and their mean -R/A_dense x100."""
    if "GEN MS" not in values.columns:
        return values
    gen = used[~used.higher_is_better.astype(bool)] if len(used) else used
    if gen.empty:
        return values
    worse = gen[gen.R >= 0] if len(gen) else gen
    counts = {r: float((worse.technique == r).sum()) for r in values.index}
    means = {r: float((-100 * g.R / g.dense).mean()) for r, g in worse.groupby("technique")} if len(worse) else {}
    at = list(values.columns).index("GEN MS") + 1
    values.insert(at, GEN_WORSE, [counts[r] if (gen.technique == r).any() else math.nan for r in values.index])
    values.insert(at + 1, GEN_WORSE_MEAN, [means.get(r, math.nan) for r in values.index])
    return values


def _diverged_note(used: pd.DataFrame) -> list[str]:
    hit = used[used.diverged_units > 0] if len(used) else used
    if hit.empty:
        return []
    parts = [
        f"{r} {int(g.diverged_units.sum())} of {int(g.units.sum())} unit(s) in {len(g)} run(s)"
        for r, g in hit.groupby("technique")
    ]
    return [f"diverged units (restored to their unreconstructed weights; the runs still count): {'; '.join(parts)}"]


def _aspect(aspect, recon, failed, tasks, baseline, plan, matched) -> dict:
    """One aspect's grid, gaps, flags and notes."""
    col, choices, knobs = ASPECTS[aspect]
    labels = dict(choices)
    ok_a = _at_baseline(recon[recon[col].isin(labels)], col, baseline)
    ok_a = with_rest(ok_a.assign(technique=ok_a[col].map(labels)), knobs).dropna(subset=["gain"])
    failed_a = _at_baseline(failed[failed[col].isin(labels)], col, baseline)
    failed_a = failed_a.assign(technique=failed_a[col].map(labels))
    rows = [label for _, label in choices]  # all techniques listed; one without runs is a gap
    grid = task_rate_grid(
        ok_a, "technique", rows, tasks, "gain", "OM_recon", table=f"table3|{aspect}", matched=matched, plan=plan
    )
    gaps = coverage_gaps("table3", ok_a, failed_a, ["technique"], COORDS)
    base_text = ", ".join(f"{k}={v}" for k, v in baseline.items() if k != col)
    fixed_notes, fixed = held_fixed(grid.used, knobs, "table3", aspect)
    return {
        "grid": grid,
        "gaps": gaps,
        "flags": flag_task_rate(grid.values, grid.where, gaps, "technique", incomplete=not matched),
        "notes": [f"{aspect}: rows vary {', '.join(knobs)} around {base_text}"]
        + [f"{aspect}: {n}" for n in grid.notes + _diverged_note(grid.used) + fixed_notes],
        "fixed": fixed,
        "group": list(grid.values.index),
    }


def _head_notes(recon: pd.DataFrame, in_aspect: int, twin_gaps: list[dict]) -> list[str]:
    head = [
        "R = A_{s,r} - A_s against the run's reconstruction=none twin (Eq. 3); cells: E(R/A_dense) x100 over models; "
        "GEN (lower-is-better) term exp(A_dense/R) when R < 0, 0 when R >= 0 (the bounded Eq. 4 term; "
        f"'{GEN_WORSE}' counts those runs, '{GEN_WORSE_MEAN}' is their mean -R/A_dense x100); MS and OM_recon: "
        "signed quadratic means (negative when harm dominates); compare rows within one aspect only; " + INTERVAL_NOTE
    ]
    off = len(recon) - in_aspect
    if off:
        head.append(f"{off} reconstructed run(s) are off every aspect's baseline and are not in this table")
    kinds = {k: sum(g["kind"] == k for g in twin_gaps) for k in ("no-baseline", "non-finite", "diverged")}
    if kinds["diverged"]:
        head.append(f"{kinds['diverged']} run(s) left out: every reconstruction unit diverged (see gaps)")
    if kinds["no-baseline"] + kinds["non-finite"]:
        n = kinds["no-baseline"] + kinds["non-finite"]
        head.append(f"{n} reconstructed run(s) left out: no twin or a non-finite term (see gaps)")
    return head


def reconstruction_table(
    runset: RunSet, matched: bool = True, baseline: dict | None = None, kind: str = JACKKNIFE
) -> TrackTable:
    baseline = {**DEFAULT_BASELINE, **(baseline or {})}
    recon, twin_gaps = paired_gains(runset)
    failed = runset.failed[runset.failed.reconstruction != "none"]
    tasks = ordered_tasks(set(recon.task) | set(failed.task))
    plan = make_plan({(task_label(t), m) for t, m in units_of(recon, "task")}, kind)
    parts = {a: _aspect(a, recon, failed, tasks, baseline, plan, matched) for a in ASPECTS}
    in_aspect = len(
        set().union(*(_at_baseline(recon[recon[c].isin(dict(ch))], c, baseline).index for c, ch, _ in ASPECTS.values()))
    )
    used = pd.concat([p["grid"].used for p in parts.values()])
    values = _gen_worse(pd.concat([p["grid"].values for p in parts.values()]), used)
    flags = pd.concat([p["flags"] for p in parts.values()]).reindex(columns=values.columns, fill_value="")
    values.index.name = "technique"
    head = _head_notes(recon, in_aspect, twin_gaps)
    if values.empty or values.isna().all().all():
        head.append("no reconstructed runs")
    grids = [p["grid"] for p in parts.values()]
    return TrackTable(
        "table3_reconstruction",
        "Table 3: reconstruction techniques (gain over no reconstruction)",
        values,
        flags,
        {c: "max" for c in values.columns if not values[c].isna().all() and not c.startswith("GEN worse")},
        head + [n for p in parts.values() for n in p["notes"]],
        twin_gaps + [g for p in parts.values() for g in p["gaps"]],
        groups=[p["group"] for p in parts.values()],
        cells=[{**c, "aspect": a} for a, p in parts.items() for c in p["grid"].cells],
        est={k: v for g in grids for k, v in g.est.items()},
        plan=plan,
        unranked=set().union(*(g.unmatched_rows for g in grids)) if not matched else set(),
        pooled=grids[0].pooled if grids else {},
        fixed=[f for p in parts.values() for f in p["fixed"]],
    )
