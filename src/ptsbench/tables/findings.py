"""The paper's directional findings (§5), checked on the tables built from the run records.

Rule: every entry of ``findings.yaml`` (the one list of findings, each with its paper section)
names rows of one table column and a direction. Its margin is the difference the finding
predicts to be positive (in points x100: better row minus worse row, signs flipped for
lower-is-better columns), and its 95% interval comes from the tables' bootstrap draws, which
are paired across matched rows (``tables.compare``). Verdict: 'holds' when the interval lies
above 0, 'fails' when it lies below, 'not enough runs' when it spans 0 or a row has no value.
An ``order`` finding holds when every neighbour pair does, fails when any pair fails.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from .base import TrackTable
from .compare import boot_mean, interval

FINDINGS_FILE = Path(__file__).with_name("findings.yaml")
HOLDS, FAILS, UNKNOWN = "holds", "fails", "not enough runs"
KINDS = ("order", "best", "worst", "similar", "layers_more_pruned")


@dataclass
class Verdict:
    id: str
    section: str
    claim: str
    verdict: str
    margin: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    detail: str = ""


def load_findings(path: str | Path = FINDINGS_FILE) -> list[dict]:
    return yaml.safe_load(Path(path).read_text()) or []


def _value(table: TrackTable, label: str, column: str):
    """(point value, bootstrap draws) of a row in a column, or None when it has no value."""
    if column not in table.values.columns:
        return None
    for idx in table.values.index:
        name = idx[-1] if isinstance(idx, tuple) else idx
        if str(name) != label:
            continue
        v = table.values.at[idx, column]
        if isinstance(v, (float, int)) and not math.isnan(v):
            draws = table.boot.get((idx, column))
            return float(v), draws if draws is not None else np.full(1, float(v))
    return None


def _verdict(margin: float, draws: np.ndarray) -> tuple[str, tuple[float, float]]:
    lo, hi = interval(draws) if len(draws) > 1 else (margin, margin)
    if math.isnan(lo):
        return UNKNOWN, (lo, hi)
    if lo > 0:
        return HOLDS, (lo, hi)
    if hi < 0:
        return FAILS, (lo, hi)
    return UNKNOWN, (lo, hi)


def _pairwise(a, b, sign) -> tuple[float, np.ndarray]:
    return sign * (a[0] - b[0]), sign * (a[1] - b[1])


def check_finding(spec: dict, tables: dict[str, TrackTable], runs=None) -> Verdict:
    out = Verdict(spec["id"], str(spec.get("section", "")), spec.get("claim", ""), UNKNOWN)
    kind, rows = spec["kind"], list(spec.get("rows", []))
    if kind not in KINDS:
        raise ValueError(f"findings.yaml: finding '{spec['id']}' has unknown kind '{kind}'; valid: {', '.join(KINDS)}")
    if kind == "layers_more_pruned":
        return _layers_more_pruned(out, spec, runs)
    table = tables.get(spec["table"])
    column = spec.get("column")
    if table is None or column not in table.values.columns:
        out.detail = f"no column {column} in {spec['table']}"
        return out
    sign = -1.0 if table.better.get(column) == "min" else 1.0
    have = {r: _value(table, r, column) for r in rows}
    missing = [r for r, v in have.items() if v is None]
    if missing:
        out.detail = f"no value for {', '.join(missing)} in {spec['table']} {column}"
        return out
    if kind in ("best", "worst"):
        others = {}
        for idx in table.values.index:
            name = str(idx[-1] if isinstance(idx, tuple) else idx)
            if name != rows[0] and _value(table, name, column) is not None and _same_group(table, rows[0], name):
                others[name] = _value(table, name, column)
        if not others:
            out.detail = f"no other row of {spec['table']} {column} to compare with"
            return out
        me = have[rows[0]]
        pts = np.stack([sign * o[1] for o in others.values()]) if _all_same_len(me, others) else None
        best_other = (
            max(others, key=lambda k: sign * others[k][0])
            if kind == "best"
            else min(others, key=lambda k: sign * others[k][0])
        )
        if kind == "best":
            margin = sign * me[0] - max(sign * o[0] for o in others.values())
            draws = sign * me[1] - pts.max(0) if pts is not None else np.full(1, margin)
            out.detail = f"vs best other: {best_other}"
        else:
            margin = min(sign * o[0] for o in others.values()) - sign * me[0]
            draws = pts.min(0) - sign * me[1] if pts is not None else np.full(1, margin)
            out.detail = f"vs worst other: {best_other}"
        out.margin = margin
        out.verdict, out.ci = _verdict(margin, draws)
        return out
    if kind == "similar":
        margin, draws = _pairwise(have[rows[0]], have[rows[1]], 1.0)
        tol = float(spec.get("tolerance", 5.0))
        lo, hi = interval(draws) if len(draws) > 1 else (margin, margin)
        out.margin, out.ci = margin, (lo, hi)
        out.verdict = HOLDS if -tol <= lo and hi <= tol else FAILS if lo > tol or hi < -tol else UNKNOWN
        out.detail = f"{rows[0]} - {rows[1]}; holds when the interval lies within ±{tol:g}"
        return out
    if kind == "order":
        verdicts, parts = [], []
        for a, b in zip(rows, rows[1:]):
            margin, draws = _pairwise(have[a], have[b], sign)
            v, ci = _verdict(margin, draws)
            verdicts.append((v, margin, ci))
            parts.append(f"{a} vs {b}: {margin:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] {v}")
        out.verdict = (
            FAILS
            if any(v == FAILS for v, _, _ in verdicts)
            else HOLDS
            if all(v == HOLDS for v, _, _ in verdicts)
            else UNKNOWN
        )
        worst = min(verdicts, key=lambda x: x[1])
        out.margin, out.ci = worst[1], worst[2]
        out.detail = "; ".join(parts) if len(parts) > 1 else ""
        return out
    raise AssertionError(kind)


def _same_group(table: TrackTable, a: str, b: str) -> bool:
    if not table.groups:
        return True
    return any(a in g and b in g for g in table.groups)


def _all_same_len(me, others) -> bool:
    return all(len(o[1]) == len(me[1]) for o in others.values())


def _layers_more_pruned(out: Verdict, spec: dict, runs) -> Verdict:
    """Mean over the allocator's runs of (learned - init) rate on the matching layers, x100."""
    if runs is None or runs.empty:
        out.detail = "no runs"
        return out
    label, globs = spec["rows"][0], list(spec.get("layers", []))
    sel = runs[(runs.allocator == label) & (runs.reconstruction == "none")]
    gains = []
    for final, init in zip(sel.per_layer, sel.init_per_layer):
        if not isinstance(final, dict) or not isinstance(init, dict):
            continue
        names = [n for n in final if n in init and any(fnmatch.fnmatch(n, g) for g in globs)]
        if names:
            gains.append(100 * float(np.mean([final[n] - init[n] for n in names])))
    if not gains:
        out.detail = f"no {label} run with layers matching {', '.join(globs)}"
        return out
    vals = np.array(gains)
    out.margin = float(vals.mean())
    out.verdict, out.ci = _verdict(out.margin, boot_mean(vals, f"finding|{out.id}"))
    out.detail = f"{len(vals)} run(s); rate points gained on {', '.join(globs)} over the init"
    return out


def check_findings(tables: list[TrackTable], runset=None, path: str | Path = FINDINGS_FILE) -> list[Verdict]:
    by_key = {t.key.split("_")[0]: t for t in tables}
    runs = runset.ok if runset is not None else None
    return [check_finding(spec, by_key, runs) for spec in load_findings(path)]


def findings_markdown(verdicts: list[Verdict]) -> str:
    counts = {v: sum(x.verdict == v for x in verdicts) for v in (HOLDS, FAILS, UNKNOWN)}
    lines = [
        "### The paper's findings on these runs",
        "",
        f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[UNKNOWN]} have not enough runs "
        "(margin in points x100, positive = as the paper says; 95% bootstrap interval).",
        "",
        "| § | finding | verdict | margin | 95% CI | detail |",
        "|---|---|---|--:|---|---|",
    ]
    for v in verdicts:
        margin = "" if math.isnan(v.margin) else f"{v.margin:+.2f}"
        ci = "" if math.isnan(v.ci[0]) else f"[{v.ci[0]:+.2f}, {v.ci[1]:+.2f}]"
        lines.append(f"| {v.section} | {v.claim} | **{v.verdict}** | {margin} | {ci} | {v.detail} |")
    return "\n".join(lines) + "\n"
