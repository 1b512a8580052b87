"""Which runs a comparison may pool and which it may compare (docs/methods.md#decisions).

Rules:
- One setting per row: a row's runs in one cell (task, model, dataset, rate) may differ only in
  their seeds. Runs that differ in any other knob that can change a score (everything but
  ``identity.is_neutral``, ``eval.*`` and ``dataset.*`` included; a knob at its default equals an
  absent one) are different settings: the row is split, its label naming the knobs that differ
  ('ERK (allocator.power=2)'), never pooled as if they were seeds.
- Matched rows: a run's cell key is (model, dataset, rate, seeds, rest), ``rest`` a digest of its
  setting minus the compared knobs; per task, every row is cut to the keys all rows have. A run
  that reads no calibration data (``seed_free``) carries every seed key of its partners, so it
  matches each of their seeds, and still counts once in its cell. A row that shares no key with the others is
  left out (with a note) rather than emptying the comparison.
- Tables 4 and 6 (rows pool different models) match on (rate, seeds) only, and keep each row's
  main setting: runs of another setting in the same cell are left out with a note.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence

import pandas as pd

KEY = ("model", "dataset", "rate", "seed_key", "rest")
COORDINATES = ("sparsity.rate", "seed", "calib.seed")  # a run's place in the grid, not its setting
CELL = ("task", "model", "dataset", "rate")


def _drop(knobs: dict, prefixes: Sequence[str]) -> dict:
    return {k: v for k, v in knobs.items() if not any(k == p or k.startswith(p + ".") for p in prefixes)}


def _digest(knobs: dict) -> str:
    return hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:16]


def _digests(settings, drop: Sequence[str]) -> list[str]:
    """The digest of each setting minus ``drop`` (computed once per distinct setting object)."""
    memo: dict[int, str] = {}
    out = []
    for s in settings:
        if id(s) not in memo:
            memo[id(s)] = _digest(_drop(s or {}, drop))
        out.append(memo[id(s)])
    return out


def with_rest(runs: pd.DataFrame, compared: Sequence[str]) -> pd.DataFrame:
    """Add ``rest``: the digest of each run's setting minus the compared knobs and its coordinates."""
    return runs.assign(rest=_digests(runs.setting, (*COORDINATES, *compared)) if len(runs) else [])


IDENTITY = ("model", "task", "dataset.name")  # who a run is: differs between the models a row pools


def _conflicts(runs: pd.DataFrame, row_col: str) -> tuple[dict, list[tuple], list[str]]:
    """(row -> knobs that differ between runs of one cell, each run's cell, each run's setting digest
    without its coordinates and identity)."""
    cells = keys_of(runs, [row_col, *CELL])
    digests = _digests(runs.setting, (*COORDINATES, *IDENTITY))
    per_cell: dict[tuple, list] = {}
    for cell, digest, setting in zip(cells, digests, runs.setting):
        per_cell.setdefault(cell, []).append((digest, setting or {}))
    knobs: dict = {}
    for cell, found in per_cell.items():
        if len({d for d, _ in found}) > 1:
            differ = {k for _, a in found for _, b in found for k in set(a) | set(b) if a.get(k) != b.get(k)}
            knobs.setdefault(cell[0], set()).update(differ - set(COORDINATES))
    return knobs, cells, digests


def separate_settings(runs: pd.DataFrame, row_col: str) -> tuple[pd.DataFrame, list[str]]:
    """Split every row whose runs in one cell differ in more than their seeds: a run off its defaults
    in a knob that differs there is labelled with it ('ERK (allocator.power=2)'), a run at the
    defaults keeps the row's label; returns the relabelled runs and a note per split row."""
    if runs.empty:
        return runs, []
    knobs, _, _ = _conflicts(runs, row_col)
    notes, labels = [], runs[row_col].astype(object).copy()
    for row in sorted(knobs, key=str):
        names = sorted(knobs[row])
        mine = runs[row_col] == row
        for i, setting in zip(runs.index[mine], runs.setting[mine]):
            off = [f"{k}={setting[k]}" for k in names if k in setting]  # runs at the defaults keep the label
            labels[i] = f"{row} ({', '.join(off)})" if off else row
        notes.append(f"{row}: runs that differ in {', '.join(names)} are separate rows, not replicates")
    return runs.assign(**{row_col: labels}), notes


def keep_main_setting(runs: pd.DataFrame, row_col: str) -> tuple[pd.DataFrame, list[str]]:
    """Tables 4 and 6 (a row pools a task's or a family's models at one setting): where a row's runs
    in one cell hold different settings, keep the setting most of the row's runs have and leave the
    others out with a note, so that a 50-sample copy of a run never enters a cell as a seed."""
    if runs.empty:
        return runs, []
    knobs, cells, digests = _conflicts(runs, row_col)
    if not knobs:
        return runs, []
    counts = Counter((c[0], d) for c, d in zip(cells, digests))
    main = {row: max((n, d) for (r, d), n in counts.items() if r == row)[1] for row in knobs}
    keep = [c[0] not in knobs or d == main[c[0]] for c, d in zip(cells, digests)]
    notes = [
        f"{row}: {sum(c[0] == row and not k for c, k in zip(cells, keep))} run(s) left out, their "
        f"{', '.join(sorted(knobs[row]))} differ from the row's other runs"
        for row in sorted(knobs, key=str)
    ]
    return runs[keep], notes


def keys_of(frame: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    return list(zip(*(map(str, frame[c].tolist()) for c in cols))) if len(frame) else []


def _common_keys(keys: dict) -> tuple[set, list]:
    """The keys every row has; rows sharing nothing with the others are dropped first (most isolated first)."""
    keys, dropped = dict(keys), []
    while len(keys) > 1 and not set.intersection(*keys.values()):
        overlap = {r: len(k & set().union(*(v for s, v in keys.items() if s != r))) for r, k in keys.items()}
        worst = min(overlap, key=lambda r: (overlap[r], len(keys[r])))
        dropped.append(worst)
        del keys[worst]
    return (set.intersection(*keys.values()) if keys else set()), dropped


def run_keys(runs: pd.DataFrame, key_cols: Sequence[str]) -> list[set]:
    """Each run's cell keys; a seed-free run's also carry every seed key of the seeded runs."""
    seed_col = list(key_cols).index("seed_key") if "seed_key" in key_cols else None
    own = keys_of(runs, key_cols)
    free = runs.seed_free.astype(bool).tolist() if "seed_free" in runs else [False] * len(runs)
    seeded = {k[seed_col] for k, f in zip(own, free) if not f} if seed_col is not None else set()
    if seed_col is None or not seeded or all(free):
        return [{k} for k in own]
    return [
        {k} | ({k[:seed_col] + (s,) + k[seed_col + 1 :] for s in seeded} if f else set()) for k, f in zip(own, free)
    ]


def match_cells(
    runs: pd.DataFrame, row_col: str, rows: Sequence, matched: bool = True, key_cols: Sequence[str] = KEY
) -> tuple[pd.DataFrame, set, list[str]]:
    """One task's runs cut to the keys every row has (``matched``); returns (kept runs, one per
    digest; rows lacking some keys; notes)."""
    runs = runs.drop_duplicates("digest")
    own = run_keys(runs, key_cols)
    keys: dict = {}
    for k, label in zip(own, runs[row_col].tolist()):
        keys.setdefault(label, set()).update(k)
    keys = {r: keys[r] for r in rows if r in keys}
    union = set().union(*keys.values()) if keys else set()
    unmatched = {r for r in keys if keys[r] != union}
    if not matched or runs.empty:
        return runs, unmatched, []
    common, dropped = _common_keys(keys)
    notes = [f"{r} left out: it shares no cell with the other rows" for r in dropped]
    short = {r: len(keys[r] - common) for r in keys if r not in dropped and keys[r] - common}
    if short:
        notes.append(
            f"matched on the {len(common)} cell(s) every row has; left out "
            + ", ".join(f"{r} {k}" for r, k in short.items())
            + " cell(s)"
        )
    return runs[[bool(k & common) for k in own]], unmatched, notes


def match_rates(
    runs: pd.DataFrame,
    row_col: str,
    matched: bool = True,
    unit_cols=("model", "dataset"),
    key_cols=("rate", "seed_key"),
) -> tuple[pd.DataFrame, set, list[str]]:
    """Tables 4 and 6: rows (tasks, families) pool different models, so they are matched on
    (rate, seed) only: a row covers the keys every one of its models has, and all rows are cut
    to the keys they all cover. Returns (runs kept, one per digest; rows lacking some keys; notes)."""
    if runs.empty:
        return runs, set(), []
    runs = runs.drop_duplicates("digest")
    own = run_keys(runs, key_cols)
    per_unit: dict = {}
    for k, row, unit in zip(own, runs[row_col], keys_of(runs, unit_cols)):
        per_unit.setdefault(row, {}).setdefault(unit, set()).update(k)
    cover = {row: set.intersection(*units.values()) for row, units in per_unit.items()}
    union = set().union(*cover.values())
    unmatched = {
        row for row, units in per_unit.items() if cover[row] != union or any(u != cover[row] for u in units.values())
    }
    if not matched:
        return runs, unmatched, []
    common = set.intersection(*cover.values())
    kept = runs[[bool(k & common) for k in own]]
    notes = []
    if len(kept) < len(runs):
        notes.append(
            f"matched on the {len(common)} (rate, seed) pair(s) every row and model has; "
            f"{len(runs) - len(kept)} run(s) outside them left out"
        )
    return kept, unmatched, notes
