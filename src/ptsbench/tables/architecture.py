"""Table 6 — neural architecture (OM_arch, Eq. 5) and model size robustness (OM_robust, Eqs. 6-7).

Rule: take the classification runs without reconstruction made with the reference allocator
(the paper's model tracks repeat its L2Norm numbers; ``--model-allocator``). Per architecture
family (and dataset; labels from the model-adapter registry), average the relative score over
all sizes at each rate; OM_arch = the quadratic mean over rates. G_size = the same per size;
OM_robust = the standard deviation of G_size (x100) over the family's sizes — lower is better,
undefined for a single size. Families are matched on (rate, seed): every family and size is
averaged over the same rates and seeds. Intervals: bootstrap over each cell's runs
(``tables.compare``), pushed through Eqs. 5-7.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..metrics import g_size, om_arch, om_robust
from .base import TrackTable, coverage_gaps, flag_cells, rate_label
from .compare import BOOTSTRAP, boot_qmean, cell, held_fixed, match_rates, tidy
from .frame import RunSet, family_label


def model_track_runs(runset: RunSet, allocator: str, task: str | None = None):
    """(ok, failed) runs of the model tracks: no reconstruction, the reference allocator."""

    def pick(df):
        df = df[df.reconstruction == "none"]
        if allocator != "all":
            df = df[(df.allocator_name == allocator) | (df.allocator == allocator)]
        return df if task is None else df[df.task == task]

    return pick(runset.ok), pick(runset.failed)


def architecture_tables(runset: RunSet, allocator: str = "l2norm", task: str = "cls", matched: bool = True):
    """(Table 6, per-size G_size table)."""
    ok, failed = model_track_runs(runset, allocator, task)
    ok = ok.assign(arch=ok.family.map(family_label), row=list(zip(ok.dataset, ok.family.map(family_label))))
    failed = failed.assign(arch=failed.family.map(family_label))
    ok_all = ok
    ok, unmatched, match_notes = match_rates(ok, "row", matched)
    rates = sorted(set(ok.rate) | (set() if matched else set(failed.rate)))
    rows, size_rows, cells, boot, n_of = {}, [], [], {}, {}
    for (dataset, arch), g in ok.groupby(["dataset", "arch"], sort=False):
        row = (dataset, arch)
        per_rate, per_boot = {}, []
        for r in rates:
            value, draws, n, models = cell(g[g.rate == r], "rel", f"table6|{dataset}|{r}")
            per_rate[r], boot[(row, rate_label(r))], n_of[(row, rate_label(r))] = value, draws * 100, n
            per_boot.append(draws)
            if n:
                cells.append(
                    tidy("table6", f"{arch} ({dataset})", "CLS", rate_label(r), r, 100 * value, draws * 100, n, models)
                )
        g_sizes, g_boot = {}, []
        for size, s in g.groupby("size", sort=False):
            size_draws = [cell(s[s.rate == r], "rel", f"table6|{dataset}|{arch}|{size}|{r}")[1] for r in rates]
            g_sizes[size] = g_size({r: cell(s[s.rate == r], "rel", "")[0] for r in rates})
            g_boot.append(boot_qmean(size_draws) * 100)
            params = s.params.dropna()
            size_rows.append(
                {
                    "dataset": dataset,
                    "family": arch,
                    "size": size,
                    "model": s.model.iloc[0],
                    "params": float(params.mean()) if len(params) else math.nan,
                    "G_size": 100 * g_sizes[size],
                    "loss": 100 * (1 - g_sizes[size]),
                }
            )
        arch_draws = boot_qmean(per_boot) * 100
        robust_draws = np.std(np.stack(g_boot), axis=0) if len(g_boot) >= 2 else np.full(BOOTSTRAP, np.nan)
        rows[row] = {
            **{rate_label(r): 100 * per_rate[r] for r in rates},
            "OM_arch": 100 * om_arch(per_rate),
            "OM_robust": om_robust({k: 100 * v for k, v in g_sizes.items()}),
        }
        models = sorted(set(g.model))
        for col, draws in (("OM_arch", arch_draws), ("OM_robust", robust_draws)):
            boot[(row, col)], n_of[(row, col)] = draws, len(g)
            cells.append(tidy("table6", f"{arch} ({dataset})", "CLS", col, None, rows[row][col], draws, len(g), models))
    for (dataset, arch), _ in failed.groupby(["dataset", "arch"], sort=False):
        rows.setdefault((dataset, arch), {})
    columns = [rate_label(r) for r in rates] + ["OM_arch", "OM_robust"]
    values = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(float)
    if len(values):
        values.index = pd.MultiIndex.from_tuples(values.index, names=["dataset", "family"])
    gaps = coverage_gaps("table6", ok_all, failed, ["dataset", "arch"], ["rate", "seed"], ["model", "size"])
    flags = flag_cells(
        values, gaps, lambda g: (g["dataset"], g["arch"]), lambda g: rate_label(g["rate"]), incomplete=not matched
    )
    for gap in gaps if not matched else []:
        row = (gap["dataset"], gap["arch"])
        for col in ("OM_arch", "OM_robust"):
            if row in flags.index and not math.isnan(values.at[row, col]):
                flags.at[row, col] = "*"
    notes = [
        f"task {task.upper()}, reconstruction=none, allocator={allocator}; per-rate E(A_s/A) x100 over a family's "
        "sizes; OM_arch = quadratic mean over rates (Eq. 5); OM_robust = std of G_size x100 over sizes "
        "(Eq. 7, lower is better; '—' for a single size); ± = half-width of the 95% bootstrap interval"
    ]
    notes += match_notes + held_fixed(ok, ("model",))
    if values.empty:
        notes.append(f"no {task} runs with reconstruction=none and allocator={allocator}")
    better = {c: "max" for c in columns}
    better["OM_robust"] = "min"
    table = TrackTable(
        "table6_architecture",
        "Table 6: architecture sparsity potential and size robustness",
        values,
        flags,
        better,
        notes,
        gaps,
        digits={"OM_robust": 3},
        cells=cells,
        boot=boot,
        n=n_of,
        unranked=set() if matched else set(unmatched),
    )
    sizes = pd.DataFrame(size_rows, columns=["dataset", "family", "size", "model", "params", "G_size", "loss"])
    return table, sizes
