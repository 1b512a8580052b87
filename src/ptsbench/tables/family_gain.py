"""Non-uniform allocation per family: the open question of OWL (Yin et al., ICML 2024, "Outlier Weighed
Layerwise Sparsity"), whose layer-wise allocation helps LLMs but was reported to help CNNs less than ViTs.

Rule: Table 2's runs (magnitude masks, no reconstruction) of the classifiers, matched like Table 2
(every allocator over the same model x rate x seed cells). Per model, an allocator's score is the mean
over rates of its relative score (each rate's seeds averaged first); a cell is the mean over the family's
models of (allocator - Uniform), paired by model, x100, with the 95% interval over those models
(jackknife t). A report, not a verdict: it answers "does allocation help this family more than that one"
only as far as a family's few sizes allow, and says so through its intervals.
"""

from __future__ import annotations

import pandas as pd

from .allocation import BEYOND_PAPER_ORDER, allocator_rows
from .base import TrackTable
from .evidence import JACKKNIFE, cell, make_plan
from .matching import match_cells, with_rest
from .runs import RunSet

KEY = "alloc-family"
TITLE = "Non-uniform allocation per family: gain over Uniform (CLS, magnitude masks, no reconstruction)"
BASELINE = "Uniform"


def model_scores(runs: pd.DataFrame) -> pd.Series:
    """(allocator, family, model) -> mean over rates of the model's seed-mean relative score."""
    per_rate = runs.groupby(["allocator", "arch", "model", "rate"]).rel.mean()
    return per_rate.groupby(level=["allocator", "arch", "model"]).mean()


def family_gain_table(runset: RunSet, matched: bool = True, kind: str = JACKKNIFE) -> TrackTable:
    """Per family (rows) and non-uniform allocator (columns): the gain over Uniform described above."""
    ok = runset.ok[(runset.ok.task == "cls") & (runset.ok.reconstruction == "none")]
    ok = with_rest(ok, ("allocator",))
    rows = allocator_rows(ok)
    kept, _, match_notes = match_cells(ok, "allocator", rows, matched)
    scores = model_scores(kept) if len(kept) else pd.Series(dtype=float)
    families = sorted({f for _, f, _ in scores.index})
    plan = make_plan([(f, m) for _, f, m in scores.index], kind)
    others = [r for r in rows if r != BASELINE]
    values = pd.DataFrame(index=pd.Index(families, name="family"), columns=[*others, "models"], dtype=float)
    est = {}
    for family in families:
        base = scores.get(BASELINE, pd.Series(dtype=float))
        base = base[base.index.get_level_values(0) == family].droplevel(0) if len(base) else base
        values.loc[family, "models"] = len(base)
        for alloc in others:
            own = scores[alloc]
            own = own[own.index.get_level_values(0) == family].droplevel(0)
            gains = {(family, m): 100 * (own[m] - base[m]) for m in own.index if m in base.index}
            if gains:
                est[(family, alloc)] = cell(plan, gains)
                values.loc[family, alloc] = est[(family, alloc)].value
    values = values.dropna(axis=1, how="all")
    if list(values.columns) == ["models"]:  # no allocator to compare with Uniform: an empty table
        values = values.iloc[0:0, 0:0]
    orders = dict(zip(ok.allocator, ok.allocator_order))
    notes = [
        "gain over Uniform x100, paired by model: per model the mean over rates of the relative score (seeds "
        "first), then the mean over the family's models of (allocator - Uniform); ± = half-width of the 95% "
        "interval over the family's models (jackknife t), (n=k) where fewer than 2 models leave none",
        "the open question of OWL (Yin et al. 2024): does non-uniform allocation help CNNs less than ViTs? "
        "A report per family, not a verdict",
        *[f"CLS: {n}" for n in match_notes],
    ]
    beyond = [c for c in values.columns if orders.get(c, (0,))[0] >= BEYOND_PAPER_ORDER]
    if beyond:
        notes.append(f"{', '.join(beyond)}: beyond the paper (allocators published after it)")
    return TrackTable(
        KEY,
        TITLE,
        values,
        pd.DataFrame("", index=values.index, columns=values.columns),
        {c: "max" for c in values.columns if c != "models"},
        notes,
        digits={"models": 0},
        est=est,
        plan=plan,
        beyond=set(families),
    )
