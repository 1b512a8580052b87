"""Table 6 — neural architecture (OM_arch, Eq. 5) and model size robustness (OM_robust, Eqs. 6-7).

Rule: take the classification runs without reconstruction made with the reference allocator
(the paper's model tracks repeat its L2Norm numbers; ``--model-allocator``). Per architecture
family (and dataset; labels from the model-adapter registry), average the relative score over
the family's sizes at each rate (each size's seeds first); OM_arch = the signed quadratic mean
over rates. G_size = the same per size; OM_robust = the standard deviation of G_size (x100) over
the family's sizes — lower is better, undefined for a single size. Families are matched on
(rate, seed). A family's sizes are its models: intervals leave one size out (``tables.evidence``),
so a family with 2 sizes (1 size pair) has an OM_robust but no interval for it.
"""

from __future__ import annotations

import math

import pandas as pd

from .base import TrackTable, coverage_gaps, flag_cells, rate_label
from .cells import cell_estimate, tidy, units_of
from .evidence import JACKKNIFE, make_plan, signed_qmean, spread
from .knobs import held_fixed
from .labels import family_label
from .matching import keep_main_setting, match_rates
from .runs import RunSet

SIZE_COLUMNS = ["dataset", "family", "size", "model", "params", "G_size", "loss"]


def model_track_runs(runset: RunSet, allocator: str, task: str | None = None):
    """(ok, failed) runs of the model tracks: no reconstruction, the reference allocator."""

    def pick(df):
        df = df[df.reconstruction == "none"]
        if allocator != "all":
            df = df[(df.allocator_name == allocator) | (df.allocator == allocator)]
        return df if task is None else df[df.task == task]

    return pick(runset.ok), pick(runset.failed)


def _family(table: TrackTable, g: pd.DataFrame, dataset: str, arch: str, rates) -> tuple[dict, list[dict]]:
    """One family row: per-rate cells, OM_arch, OM_robust (estimates into ``table``); its size rows."""
    row, plan = (dataset, arch), table.plan
    per_rate = [cell_estimate(plan, g[g.rate == r], arch, "rel") for r in rates]
    table.est.update({(row, rate_label(r)): e for r, e in zip(rates, per_rate)})
    sizes, size_rows = [], []
    for size, s in g.groupby("size", sort=False):
        g_size = signed_qmean(plan, [cell_estimate(plan, s[s.rate == r], arch, "rel") for r in rates])
        sizes.append(g_size)
        params = s.params.dropna()
        size_rows.append(
            {
                "dataset": dataset,
                "family": arch,
                "size": size,
                "model": s.model.iloc[0],
                "params": float(params.mean()) if len(params) else math.nan,
                "G_size": g_size.value,
                "loss": 100 - g_size.value,
            }
        )
    table.est[(row, "OM_arch")] = signed_qmean(plan, per_rate)
    table.est[(row, "OM_robust")] = spread(plan, sizes)
    columns = [(rate_label(r), r) for r in rates] + [("OM_arch", None), ("OM_robust", None)]
    for col, r in columns:
        if table.est[(row, col)].units:
            table.cells.append(tidy(plan, table.est[(row, col)], "table6", f"{arch} ({dataset})", "CLS", col, r))
    return {c: table.est[(row, c)].value for c, _ in columns}, size_rows


def architecture_tables(
    runset: RunSet, allocator: str = "l2norm", task: str = "cls", matched: bool = True, kind: str = JACKKNIFE
):
    """(Table 6, per-size G_size table)."""
    ok, failed = model_track_runs(runset, allocator, task)
    ok = ok.assign(arch=ok.family.map(family_label), row=list(zip(ok.dataset, ok.family.map(family_label))))
    failed = failed.assign(arch=failed.family.map(family_label))
    kept, setting_notes = keep_main_setting(ok, "arch")
    kept, unmatched, match_notes = match_rates(kept, "row", matched)
    rates = sorted(set(kept.rate) | (set() if matched else set(failed.rate)))
    columns = [rate_label(r) for r in rates] + ["OM_arch", "OM_robust"]
    table = TrackTable(
        "table6_architecture",
        "Table 6: architecture sparsity potential and size robustness",
        pd.DataFrame(),
        pd.DataFrame(),
        {**{c: "max" for c in columns}, "OM_robust": "min"},
        digits={"OM_robust": 3},
        plan=make_plan(units_of(kept, "arch"), kind),
        unranked=set() if matched else set(unmatched),
        unit="size",
    )
    rows, size_rows = {}, []
    for (dataset, arch), g in kept.groupby(["dataset", "arch"], sort=False):
        rows[(dataset, arch)], sizes = _family(table, g, dataset, arch, rates)
        size_rows += sizes
    for (dataset, arch), _ in failed.groupby(["dataset", "arch"], sort=False):
        rows.setdefault((dataset, arch), {})
    values = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
    if len(values):
        values.index = pd.MultiIndex.from_tuples(values.index, names=["dataset", "family"])
    table.values = values
    _gaps_flags_notes(table, ok, failed, task, allocator, matched, setting_notes + match_notes, kept)
    return table, pd.DataFrame(size_rows, columns=SIZE_COLUMNS)


def _gaps_flags_notes(table, ok, failed, task, allocator, matched, match_notes, kept) -> None:
    values = table.values
    table.gaps = coverage_gaps(
        "table6", ok, failed, ["dataset", "arch"], ["rate", "seed"], ["model", "size"], column_cols=("rate",)
    )
    table.flags = flag_cells(
        values, table.gaps, lambda g: (g["dataset"], g["arch"]), lambda g: rate_label(g["rate"]), not matched
    )
    for gap in table.gaps if not matched else []:
        row = (gap["dataset"], gap["arch"])
        for col in ("OM_arch", "OM_robust"):
            if row in table.flags.index and not math.isnan(values.at[row, col]):
                table.flags.at[row, col] = "*"
    fixed_notes, table.fixed = held_fixed(kept, ("model",), "table6")
    table.notes = [
        f"task {task.upper()}, reconstruction=none, allocator={allocator}; per-rate E(A_s/A) x100 over a family's "
        "sizes (each size's seeds first); OM_arch = signed quadratic mean over rates (Eq. 5); OM_robust = std of "
        "G_size x100 over sizes (Eq. 7, lower is better; '—' for a single size); ± = half-width of the 95% "
        "interval leaving one size out (jackknife t), (n=k) where it has none"
    ]
    table.notes += match_notes + fixed_notes
    if values.empty:
        table.notes.append(f"no {task} runs with reconstruction=none and allocator={allocator}")
