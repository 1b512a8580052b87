"""The 'held fixed' footnote of a comparison: which knobs its runs share, and which vary between cells.

Rule: a knob is held fixed when every run of the comparison has it with one value; the footnote
names only those that differ from their default — the schema's, or the one the option's file sets
(the full list, defaults included, goes to ``held_fixed.csv``), so a reader sees what is special about the setting, not 20 knobs nobody
touched. Knobs that vary between cells (never between the rows of one cell, see
``tables.matching``) are named with their values. The compared knobs and the cells' own
coordinates (model, task, dataset name, rate, seeds) are left out of both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from .defaults import at_default, default_option
from .matching import COORDINATES

COORDS = ("model", "task", "dataset.name", *COORDINATES)


def _shown(knob: str, skip: Sequence[str]) -> bool:
    return not any(knob == d or knob.startswith(d + ".") for d in skip)


def _at_default(knob: str, values: set, changed: set, option_files: list[dict]) -> bool:
    option = default_option(knob)  # the knob that picks an option: the root config's choice is its default
    if option is not None:
        return len(values) == 1 and at_default(next(iter(values)), option)
    if len(values) == 1 and all(
        knob in f and at_default(next(iter(values)), json.loads(f[knob])) for f in option_files
    ):
        return True  # the value every run's option file sets
    return knob not in changed


def held_fixed(
    runs: pd.DataFrame | None, compared: Sequence[str], table: str = "", scope: str = ""
) -> tuple[list[str], list[dict]]:
    """(footnotes, one dict per knob held fixed: table, scope, knob, value, at_default)."""
    if runs is None or runs.empty:
        return [], []
    runs = runs.drop_duplicates("digest")
    skip = (*COORDS, *compared)
    values: dict[str, set] = {}
    present: dict[str, int] = {}
    shown: dict[str, bool] = {}
    for knobs in runs.knobs:
        for k, v in (knobs or {}).items():
            if k not in shown:
                shown[k] = _shown(k, skip)
            if shown[k]:
                values.setdefault(k, set()).add(v)
                present[k] = present.get(k, 0) + 1
    everywhere = {k for k, n in present.items() if n == len(runs)}
    fixed = sorted(k for k, v in values.items() if len(v) == 1 and k in everywhere)
    changed = {k for s in runs.setting for k in (s or {})}
    option_files = list({id(f): f for f in runs.option_defaults}.values()) if "option_defaults" in runs else [{}]
    full = [
        {
            "table": table,
            "scope": scope,
            "knob": k,
            "value": next(iter(values[k])),
            "at_default": _at_default(k, values[k], changed, option_files),
        }
        for k in fixed
    ]
    not_default = [f"{d['knob']}={d['value']}" for d in full if not d["at_default"]]
    varying = [
        f"{k} ({', '.join(sorted(v)[:4])}{', ...' if len(v) > 4 else ''})"
        for k, v in sorted(values.items())
        if k not in fixed and (len(v) > 1 or not _at_default(k, v, changed, option_files))
    ]
    out = [
        f"held fixed, not at their defaults: {', '.join(not_default)}"
        if not_default
        else "held fixed: every other knob at its default (full list in held_fixed.csv)"
    ]
    if varying:
        out.append(f"varies between cells (never between the rows of one cell): {'; '.join(varying)}")
    return out, full
