"""Matched comparisons with confidence intervals: the task x rate grid of Tables 2 and 3 (docs/methods.md#decisions).

Rule: the rows of one comparison (Table 2's allocators, one aspect of Table 3) are compared on
the same *cells*. A run's cell key is (model, dataset, rate, seed, rest), where ``rest`` is a
digest of every config knob except the compared one and the key's own coordinates; two rows
therefore share a key only when their runs differ in the compared knob alone. Per task, the
rows that have runs there are cut to the keys all of them have (``matched``, the default);
``unmatched`` keeps every run (the old behaviour) and lists the rows that lack some keys, which
the ranking then leaves out. The table's overall column (OM) is taken over the tasks every row
has; a task missing from one row is left out of every row's OM (a note says so).

Seeds: a run that reads no calibration data (``seed_free``: Uniform/L2Norm/ERK without
reconstruction) gives the same result for every calibration seed, so it stands for each seed its
comparison partners were run with (its row is repeated per seed key, and n counts it that often);
the demo therefore runs such rows once and the learned/reconstructed rows with 2+ seeds.

Uncertainty: every cell carries n (runs) and a 95% percentile-bootstrap interval over its runs
(models x seeds; 2,000 resamples). The resample indices depend only on (table, task, rate, n),
so matched rows, whose runs are sorted by the same keys, are resampled *paired*: the
difference of two rows' bootstrap draws is the bootstrap of their paired difference (used by
Table 5 and findings.md). MS and OM intervals come from the same draws, pushed through the
quadratic means. The point values are the paper's formulas (``ptsbench.metrics``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import mean
from .base import rate_label
from .frame import task_label

BOOTSTRAP = 2000
ALPHA = 0.05
KEY = ("model", "dataset", "rate", "seed_key", "rest")
# config knobs that never change a result, or that are the cell's own coordinates
NEUTRAL = (
    "eval.",
    "reconstruction.progress",
    "skip_finished",
    "device",
    "paths.",
    "hydra.",
    "sparsity.rate",
    "seed",
    "calib.seed",
)


def rest_key(knobs: dict, compared: Sequence[str]) -> str:
    """Digest of the flat config ``knobs`` minus the compared knobs (prefixes) and the neutral ones."""
    drop = (*NEUTRAL, *compared)
    kept = {
        k: v
        for k, v in knobs.items()
        if not any(k == d or k.startswith(d if d.endswith(".") else d + ".") for d in drop)
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def with_rest(runs: pd.DataFrame, compared: Sequence[str]) -> pd.DataFrame:
    return runs.assign(rest=[rest_key(k or {}, compared) for k in runs.knobs]) if len(runs) else runs.assign(rest=[])


def expand_seed_free(runs: pd.DataFrame, row_col: str) -> pd.DataFrame:
    """Repeat every seed-free run for the seed keys the other runs of the comparison have and its
    own (row, model, dataset, rate, rest) group lacks."""
    if runs.empty or "seed_free" not in runs or not runs.seed_free.any() or runs.seed_free.all():
        return runs
    free_mask = runs.seed_free.astype(bool)
    keys = set(runs.loc[~free_mask, "seed_key"])
    group = [c for c in (row_col, "model", "dataset", "rate", "rest") if c in runs]
    copies = []
    for _, g in runs[free_mask].groupby(group, sort=False, dropna=False):
        copies += [g.iloc[[0]].assign(seed_key=k) for k in sorted(keys - set(g.seed_key))]
    return pd.concat([runs, *copies], ignore_index=True) if copies else runs


def _draws(tag: str, n: int) -> np.ndarray:
    seed = int(hashlib.sha256(f"{tag}|{n}".encode()).hexdigest()[:12], 16)
    return np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))


def boot_mean(values: np.ndarray, tag: str) -> np.ndarray:
    """BOOTSTRAP resampled means of ``values`` (constant when there is a single value)."""
    if len(values) == 0:
        return np.full(BOOTSTRAP, np.nan)
    if len(values) == 1:
        return np.full(BOOTSTRAP, float(values[0]))
    return values[_draws(tag, len(values))].mean(axis=1)


def boot_qmean(columns: list[np.ndarray]) -> np.ndarray:
    """Quadratic mean across the given bootstrap vectors (NaN ones left out), draw by draw."""
    cols = [c for c in columns if not np.isnan(c).all()]
    if not cols:
        return np.full(BOOTSTRAP, np.nan)
    return np.sqrt(np.mean(np.square(np.stack(cols)), axis=0))


def interval(draws: np.ndarray | None) -> tuple[float, float]:
    if draws is None or np.isnan(draws).any():
        return math.nan, math.nan
    lo, hi = np.percentile(draws, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(lo), float(hi)


def _keys(frame: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    return [tuple(r) for r in frame[list(cols)].astype(str).itertuples(index=False)]


@dataclass
class Grid:
    """A compared task x rate layout: values x100, their tidy cells and bootstrap draws (x100)."""

    values: pd.DataFrame
    where: dict[str, tuple]
    cells: list[dict] = field(default_factory=list)
    boot: dict[tuple, np.ndarray] = field(default_factory=dict)
    n: dict[tuple, int] = field(default_factory=dict)
    unmatched_rows: set = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    used: pd.DataFrame | None = None


def compare_task_rate(
    runs: pd.DataFrame,
    row_col: str,
    rows: Sequence[str],
    tasks: Sequence[str],
    value_col: str,
    summary: Callable,
    overall: Callable,
    overall_name: str,
    *,
    table: str,
    matched: bool = True,
    key_cols: Sequence[str] = KEY,
) -> Grid:
    """The Table 2/3 layout (per task: one column per rate, then MS; then the overall column)."""
    runs = runs[np.isfinite(runs[value_col].astype(float))] if len(runs) else runs
    columns, where, data, boot, n_of, models_of = [], {}, {r: {} for r in rows}, {}, {}, {}
    min_n = {}  # summary column -> fewest runs of a cell it summarises (no interval from single runs)
    unmatched, notes, used_parts = set(), [], []
    for task in tasks:
        t = expand_seed_free(runs[runs.task == task], row_col)
        present = [r for r in rows if (t[row_col] == r).any()]
        keys = {r: set(_keys(t[t[row_col] == r], key_cols)) for r in present}
        union = set().union(*keys.values()) if keys else set()
        common = set.intersection(*keys.values()) if keys else set()
        unmatched |= {r for r in present if keys[r] != union}
        if matched and len(t):
            dropped = {r: len(keys[r] - common) for r in present if keys[r] - common}
            if dropped:
                notes.append(
                    f"{task_label(task)}: matched on the {len(common)} cell(s) every row has; left out "
                    + ", ".join(f"{r} {k}" for r, k in dropped.items())
                    + " run(s)"
                )
            t = t[[k in common for k in _keys(t, key_cols)]]
        used_parts.append(t)
        rates = sorted(t.rate.dropna().unique())
        ms_col = f"{task_label(task)} MS"
        for rate in rates:
            col = f"{task_label(task)} {rate_label(rate)}"
            columns.append(col)
            where[col] = (task, rate)
        columns.append(ms_col)
        where[ms_col] = (task, None)
        for r in rows:
            g = t[t[row_col] == r]
            per_rate, per_boot = {}, []
            for rate in rates:
                col = f"{task_label(task)} {rate_label(rate)}"
                cell = g[g.rate == rate].sort_values(list(key_cols), key=lambda s: s.astype(str))
                vals = cell[value_col].to_numpy(dtype=float)
                per_rate[rate] = mean(vals)
                data[r][col] = per_rate[rate]
                boot[(r, col)] = boot_mean(vals, f"{table}|{task}|{rate}")
                n_of[(r, col)] = len(vals)
                models_of[(r, col)] = sorted(set(cell.model))
                per_boot.append(boot[(r, col)])
            data[r][ms_col] = summary(per_rate) if per_rate else math.nan
            boot[(r, ms_col)] = boot_qmean(per_boot)
            n_of[(r, ms_col)] = len(g)
            min_n[(r, ms_col)] = min(
                (
                    n_of[(r, f"{task_label(task)} {rate_label(x)}")]
                    for x in rates
                    if n_of[(r, f"{task_label(task)} {rate_label(x)}")]
                ),
                default=0,
            )
            models_of[(r, ms_col)] = sorted(set(g.model))
    columns.append(overall_name)
    active = [r for r in rows if any(not math.isnan(data[r].get(f"{task_label(t)} MS", math.nan)) for t in tasks)]
    for t in tasks:  # a row without a task the others have is not comparable on the overall column either
        have = [r for r in active if not math.isnan(data[r][f"{task_label(t)} MS"])]
        if have:
            unmatched |= set(active) - set(have)
    common_tasks = [t for t in tasks if active and all(not math.isnan(data[r][f"{task_label(t)} MS"]) for r in active)]
    for r in rows:
        own = [t for t in tasks if not math.isnan(data[r][f"{task_label(t)} MS"])]
        use = common_tasks if matched else own
        data[r][overall_name] = overall({t: data[r][f"{task_label(t)} MS"] for t in use}) if use else math.nan
        boot[(r, overall_name)] = boot_qmean([boot[(r, f"{task_label(t)} MS")] for t in use])
        n_of[(r, overall_name)] = sum(n_of[(r, f"{task_label(t)} MS")] for t in use)
        min_n[(r, overall_name)] = min((min_n[(r, f"{task_label(t)} MS")] for t in use), default=0)
        models_of[(r, overall_name)] = sorted({m for t in use for m in models_of[(r, f"{task_label(t)} MS")]})
    missing = [
        task_label(t)
        for t in tasks
        if t not in common_tasks and any(not math.isnan(data[r][f"{task_label(t)} MS"]) for r in rows)
    ]
    if matched and missing and common_tasks:
        notes.append(
            f"{overall_name} over {', '.join(task_label(t) for t in common_tasks)} only: "
            f"not every row has {', '.join(missing)}"
        )
    values = pd.DataFrame.from_dict(data, orient="index", columns=columns).astype(float) * 100.0
    values.index.name = row_col
    grid = Grid(
        values,
        where,
        unmatched_rows=unmatched,
        notes=notes,
        used=pd.concat(used_parts) if used_parts else runs.iloc[:0],
    )
    for (r, col), draws in boot.items():
        if n_of[(r, col)] == 0:
            continue
        single = min_n.get((r, col), n_of[(r, col)]) < 2  # a summary of single-run cells has no spread
        grid.boot[(r, col)] = draws * 100.0
        grid.n[(r, col)] = 1 if single else n_of[(r, col)]
        lo, hi = interval(draws * 100.0) if not single else (math.nan, math.nan)
        task, rate = where.get(col, (None, None))
        grid.cells.append(
            {
                "table": table,
                "row": r,
                "task": task_label(task) if task else "all",
                "column": col,
                "rate": rate,
                "value": values.at[r, col],
                "n": n_of[(r, col)],
                "ci_low": lo,
                "ci_high": hi,
                "models": ";".join(models_of[(r, col)]),
            }
        )
    return grid


def paired_difference(boot: dict, a, b, column: str) -> tuple[float, float]:
    """95% interval of row a minus row b in ``column`` (paired when the rows were matched)."""
    da, db = boot.get((a, column)), boot.get((b, column))
    if da is None or db is None:
        return math.nan, math.nan
    return interval(da - db)


def match_rates(
    runs: pd.DataFrame,
    row_col: str,
    matched: bool = True,
    unit_cols=("model", "dataset"),
    key_cols=("rate", "seed_key"),
) -> tuple[pd.DataFrame, set, list[str]]:
    """Tables 4 and 6: rows (tasks, families) pool different models, so they are matched on
    (rate, seed) only: a row covers the keys every one of its models has, and all rows are cut
    to the keys they all cover. Returns (runs kept, rows lacking some keys, notes)."""
    if runs.empty:
        return runs, set(), []
    runs = expand_seed_free(runs, row_col)
    cover = {}
    for row, g in runs.groupby(row_col, sort=False):
        per_unit = [set(_keys(u, key_cols)) for _, u in g.groupby(list(unit_cols), sort=False)]
        cover[row] = set.intersection(*per_unit)
    union = set().union(*cover.values())
    common = set.intersection(*cover.values())
    unmatched = {
        row
        for row, c in cover.items()
        if c != union
        or any(set(_keys(u, key_cols)) != c for _, u in runs[runs[row_col] == row].groupby(list(unit_cols)))
    }
    if not matched:
        return runs, unmatched, []
    kept = runs[[k in common for k in _keys(runs, key_cols)]]
    notes = []
    if len(kept) < len(runs):
        notes.append(
            f"matched on the {len(common)} (rate, seed) pair(s) every row and model has; "
            f"{len(runs) - len(kept)} run(s) outside them left out"
        )
    return kept, unmatched, notes


def cell(runs: pd.DataFrame, value_col: str, tag: str) -> tuple[float, np.ndarray, int, list[str]]:
    """(mean, bootstrap draws, n, models) of one cell's runs, sorted by their key for pairing."""
    runs = runs.sort_values(["model", "dataset", "seed_key"], key=lambda s: s.astype(str))
    vals = runs[value_col].to_numpy(dtype=float)
    vals = vals[np.isfinite(vals)]
    return mean(vals), boot_mean(vals, tag), len(vals), sorted(set(runs.model))


def tidy(
    table: str, row, task: str, column: str, rate, value: float, draws: np.ndarray | None, n: int, models: Sequence[str]
) -> dict:
    lo, hi = interval(draws) if n >= 2 else (math.nan, math.nan)
    return {
        "table": table,
        "row": row,
        "task": task,
        "column": column,
        "rate": rate,
        "value": value,
        "n": n,
        "ci_low": lo,
        "ci_high": hi,
        "models": ";".join(models),
    }


def held_fixed(
    runs: pd.DataFrame, compared: Sequence[str], coords: Sequence[str] = ("model.", "dataset.", "task.")
) -> list[str]:
    """Notes naming the knobs a comparison holds fixed (one value over all its runs) and those
    that vary between its cells besides the compared knob (model, dataset, task, rate, seeds)."""
    if runs is None or runs.empty:
        return []
    values: dict[str, set] = {}
    for knobs in runs.knobs:
        for k, v in (knobs or {}).items():
            values.setdefault(k, set()).add(v)
    skip = (*coords, *NEUTRAL, *compared)

    def shown(k):
        return not any(k == d or k.startswith(d if d.endswith(".") else d + ".") for d in skip)

    n = len(runs)
    fixed = [
        f"{k}={next(iter(v))}"
        for k, v in sorted(values.items())
        if shown(k) and len(v) == 1 and sum(k in (kn or {}) for kn in runs.knobs) == n
    ]
    varying = [
        f"{k} ({', '.join(sorted(v)[:4])}{', ...' if len(v) > 4 else ''})"
        for k, v in sorted(values.items())
        if shown(k) and (len(v) > 1 or sum(k in (kn or {}) for kn in runs.knobs) < n)
    ]
    out = [f"held fixed: {', '.join(fixed)}" if fixed else "held fixed: (none besides the cell coordinates)"]
    if varying:
        out.append(f"varies between cells (never between the rows of one cell): {'; '.join(varying)}")
    return out
