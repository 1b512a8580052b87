"""The paper's directional findings (§5), checked on the tables built from the run records.

Rule: every entry of ``findings.yaml`` (the one list of findings, each with its paper section)
names rows of one table column and a direction. Its margin is the difference the finding
predicts to be positive (points x100: better row minus worse row, signs flipped for
lower-is-better columns), an estimate over the table's models, paired by model across rows
(``tables.evidence``). Verdict (``tables.verdicts``): 'holds' when the margin's 95% interval
lies above 0, 'fails' when below, and only when every task (or family) it pools has enough
models; otherwise 'not enough evidence', with the reason. A finding on an overall column (OM over
tasks) also reports each task's own margin and is flagged when the tasks disagree in sign. An
``order`` finding holds when every neighbour pair does, fails when any pair fails.

Beyond the paper (section 'beyond'): the claims of the methods published after it, judged the same
way. A paper finding is judged among the paper's own rows (a table's ``beyond`` rows are left out of
its 'best'/'worst' comparisons). On the methods table, whose rows recur once per task, setting and
allocator, an order of two rows is their paired difference within each group that has both,
averaged over those groups.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .base import TrackTable
from .cells import unit_values
from .evidence import Estimate, cell, combine, make_plan
from .labels import task_label
from .verdicts import FAILS, HOLDS, MIN_MODELS, UNKNOWN, Judgement, judge, models_text

FINDINGS_FILE = Path(__file__).with_name("findings.yaml")
KINDS = ("order", "best", "worst", "similar", "layers_more_pruned")
DISAGREE = "tasks disagree in sign"


@dataclass
class Verdict:
    id: str
    section: str
    claim: str
    verdict: str
    margin: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    detail: str = ""
    reason: str = ""
    models: str = ""
    per_task: list[str] = field(default_factory=list)
    flag: str = ""


def load_findings(path: str | Path = FINDINGS_FILE) -> list[dict]:
    return yaml.safe_load(Path(path).read_text()) or []


def _est(table: TrackTable, label: str, column: str) -> Estimate | None:
    idx = table.row_of(label)
    e = table.estimate(idx, column) if idx is not None else None
    return e if e is not None and math.isfinite(e.value) else None


def _is_paper(spec: dict) -> bool:
    """A finding of the paper itself (not one of the newer methods' claims, section 'beyond')."""
    return str(spec.get("section", "")) != "beyond"


def _others(table: TrackTable, me: str, column: str, paper: bool = False) -> dict[str, Estimate]:
    """Every other row's estimate in ``column``; ``paper``: the paper's rows only, so a paper finding is
    judged among the rows the paper compared (an OWL row below Uniform does not break 'Uniform is worst')."""
    out = {}
    for idx in table.values.index:
        name = str(idx[-1] if isinstance(idx, tuple) else idx)
        in_group = not table.groups or any(me in g and idx in g for g in table.groups)
        if paper and name in table.beyond:
            continue
        if name != me and in_group and (est := _est(table, name, column)) is not None:
            out[name] = est
    return out


def _repeats_rows(table: TrackTable) -> bool:
    """Whether a row label recurs in several groups (the methods table: one group per task and setting)."""
    names = [str(i[-1] if isinstance(i, tuple) else i) for i in table.values.index]
    return len(names) != len(set(names))


def _pooled_pairs(table: TrackTable, rows: list[str], column: str, sign: float) -> list[tuple[str, Estimate]]:
    """(group name, rows[0] - rows[1] there, paired by model) for every group holding both rows."""
    pairs = []
    for group in table.groups:
        by_name = {str(label[-1]): label for label in group}
        if not all(r in by_name for r in rows):
            continue
        a, b = (table.estimate(by_name[r], column) for r in rows)
        if a is not None and b is not None and math.isfinite(a.value) and math.isfinite(b.value):
            name = " ".join(str(x) for x in by_name[rows[0]][:-1])
            pairs.append((name, combine(lambda x, y: sign * (x - y), a, b)))
    return pairs


class _PooledMargin:
    """column -> the mean over the groups holding both rows of their paired difference (a table whose rows
    recur per group, such as the methods table's per task and setting). Only an order of two rows is
    defined there: 'best' or 'worst' would mix groups that compare different rows. Each column's group
    pairs are built once and kept for the verdict's detail."""

    def __init__(self, spec: dict, table: TrackTable, sign: float):
        self.rows = list(spec.get("rows", []))
        if spec["kind"] != "order" or len(self.rows) != 2:
            raise ValueError(
                f"findings.yaml: finding '{spec['id']}' on {spec['table']}: its rows recur per group there, so "
                f"only kind 'order' with two rows is defined (got kind '{spec['kind']}' with {len(self.rows)} rows)"
            )
        self.table, self.sign, self.name = table, sign, spec["table"]
        self.pairs: dict[str, list[tuple[str, Estimate]]] = {}

    def __call__(self, column: str) -> tuple[Estimate | None, str]:
        pairs = self.pairs.setdefault(column, _pooled_pairs(self.table, self.rows, column, self.sign))
        if not pairs:
            return None, f"no group of {self.name} holds both {self.rows[0]} and {self.rows[1]} in {column}"
        return combine(lambda *d: sum(d) / len(d), *(e for _, e in pairs)), ""

    def detail(self, column: str) -> str:
        groups = [name for name, _ in self.pairs.get(column, [])]
        return (
            f"{self.rows[0]} - {self.rows[1]}, paired by model, mean over {len(groups)} group(s): {', '.join(groups)}"
        )


def _margin_builder(spec: dict, table: TrackTable, sign: float) -> Callable[[str], tuple[Estimate | None, str]]:
    """column -> (the finding's margin estimate there, or None with why)."""
    if _repeats_rows(table):
        return _PooledMargin(spec, table, sign)
    kind, rows = spec["kind"], list(spec.get("rows", []))

    def build(column: str):
        have = {r: e for r in rows if (e := _est(table, r, column)) is not None}
        lacking = [r for r in rows if r not in have]
        if lacking:
            return None, f"no value for {', '.join(lacking)} in {spec['table']} {column}"
        if kind in ("best", "worst"):
            others = _others(table, rows[0], column, _is_paper(spec))
            if not others:
                return None, f"no other row of {spec['table']} {column} to compare with"
            if kind == "best":
                fn = lambda me, *o: sign * me - np.max(np.stack([sign * x for x in o]), axis=0)  # noqa: E731
            else:
                fn = lambda me, *o: np.min(np.stack([sign * x for x in o]), axis=0) - sign * me  # noqa: E731
            return combine(fn, have[rows[0]], *others.values()), ""
        if kind == "similar":
            return combine(lambda a, b: a - b, have[rows[0]], have[rows[1]]), ""
        pairs = [combine(lambda a, b: sign * (a - b), have[a], have[b]) for a, b in zip(rows, rows[1:])]
        return (pairs[0] if len(pairs) == 1 else pairs), ""

    return build


def _verdict_of(table: TrackTable, est: Estimate, spec: dict, min_models: int) -> Judgement:
    tol = float(spec.get("tolerance", 5.0)) if spec["kind"] == "similar" else None
    return judge(table.plan, est, min_models, table.unit, tol)


def _fmt(est: Estimate, j: Judgement, unit: str, one_task: bool = False) -> str:
    ci = "" if math.isnan(j.ci[0]) else f" [{j.ci[0]:+.2f}, {j.ci[1]:+.2f}]"
    n = sum(j.n_models.values())
    models = f"{n} {unit}{'' if n == 1 else 's'}" if one_task else models_text(j.n_models, unit)
    return f"{est.value:+.2f}{ci} ({models})"


def _order_verdict(out: Verdict, table, pairs: list[Estimate], spec, min_models) -> None:
    rows = spec["rows"]
    judged = [(_verdict_of(table, e, spec, min_models), e) for e in pairs]
    verdicts = [j.verdict for j, _ in judged]
    out.verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else UNKNOWN
    weakest = min(range(len(pairs)), key=lambda i: pairs[i].value)
    j, e = judged[weakest]
    out.margin, out.ci, out.models = e.value, j.ci, models_text(j.n_models, table.unit)
    out.reason = "; ".join(dict.fromkeys(j.reason for j, _ in judged if j.reason)) if out.verdict == UNKNOWN else ""
    out.detail = "; ".join(
        f"{a} vs {b}: {_fmt(e, j, table.unit)} {j.verdict}" for (a, b), (j, e) in zip(zip(rows, rows[1:]), judged)
    )


def _per_task(out: Verdict, table: TrackTable, column: str, build, spec, min_models) -> None:
    """Each pooled task's own margin (each neighbour pair's, for an order); a flag when the tasks
    disagree in sign on a margin."""
    signs: dict[int, set] = {}
    for col in table.pooled.get(column, []):
        est, _ = build(col)
        if est is None:
            continue
        parts = []
        for i, e in enumerate(est if isinstance(est, list) else [est]):
            parts.append(_fmt(e, _verdict_of(table, e, spec, min_models), table.unit, one_task=True))
            if e.value:
                signs.setdefault(i, set()).add(e.value > 0)
        out.per_task.append(f"{col.removesuffix(' MS')} {', '.join(parts)}")
    if len(out.per_task) < 2:
        out.per_task = []  # one task: its margin is the finding's
    if any(len(s) > 1 for s in signs.values()):
        out.flag = DISAGREE


def check_finding(spec: dict, tables: dict[str, TrackTable], runs=None, min_models: int = MIN_MODELS) -> Verdict:
    out = Verdict(spec["id"], str(spec.get("section", "")), spec.get("claim", ""), UNKNOWN)
    kind = spec["kind"]
    if kind not in KINDS:
        raise ValueError(f"findings.yaml: finding '{spec['id']}' has unknown kind '{kind}'; valid: {', '.join(KINDS)}")
    if kind == "layers_more_pruned":
        return _layers_more_pruned(out, spec, runs, min_models)
    table, column = tables.get(spec["table"]), spec.get("column")
    if table is None or column not in table.values.columns:
        out.reason = f"no column {column} in {spec['table']}"
        return out
    column = str(column)  # a column of the table: a name
    build = _margin_builder(spec, table, -1.0 if table.better.get(column) == "min" else 1.0)
    est, why = build(column)
    if est is None:
        out.reason = why
        return out
    if isinstance(est, list):
        _order_verdict(out, table, est, spec, min_models)
    else:
        j = _verdict_of(table, est, spec, min_models)
        out.verdict, out.margin, out.ci, out.reason = j.verdict, est.value, j.ci, j.reason
        out.models = models_text(j.n_models, table.unit)
        if isinstance(build, _PooledMargin):
            out.detail = build.detail(column)
        elif kind in ("best", "worst"):
            others = _others(table, spec["rows"][0], column, _is_paper(spec))
            key = max if kind == "best" else min
            out.detail = (
                f"vs {'best' if kind == 'best' else 'worst'} other: {key(others, key=lambda k: others[k].value)}"
            )
        elif kind == "similar":
            out.detail = f"{spec['rows'][0]} - {spec['rows'][1]}; holds when the interval lies within ±{spec.get('tolerance', 5.0):g}"
    _per_task(out, table, column, build, spec, min_models)
    return out


def _layers_more_pruned(out: Verdict, spec: dict, runs, min_models: int) -> Verdict:
    """Mean over the allocator's models of (learned - init) rate on the matching layers, x100."""
    if runs is None or runs.empty:
        out.reason = "no runs"
        return out
    label, globs = spec["rows"][0], list(spec.get("layers", []))
    sel = runs[(runs.allocator == label) & (runs.reconstruction == "none")]
    gains = []
    for (_, run), final, init in zip(sel.iterrows(), sel.per_layer, sel.init_per_layer):
        if isinstance(final, dict) and isinstance(init, dict):
            names = [n for n in final if n in init and any(fnmatch.fnmatch(n, g) for g in globs)]
            if names:
                gains.append(
                    {
                        **run[["digest", "model", "task"]],
                        "gain": 100 * float(np.mean([final[n] - init[n] for n in names])),
                    }
                )
    if not gains:
        out.reason = f"no {label} run with layers matching {', '.join(globs)}"
        return out
    frame = pd.DataFrame(gains)
    values = {u: v for t, g in frame.groupby("task") for u, v in unit_values(g, task_label(t), "gain").items()}
    plan = make_plan(values)
    est = cell(plan, values, len(frame))
    j = judge(plan, est, min_models)
    out.verdict, out.margin, out.ci, out.reason, out.models = (
        j.verdict,
        est.value,
        j.ci,
        j.reason,
        models_text(j.n_models),
    )
    out.detail = f"{len(frame)} run(s); rate points gained on {', '.join(globs)} over the init"
    return out


def check_findings(
    tables: list[TrackTable], runset=None, path: str | Path = FINDINGS_FILE, min_models: int = MIN_MODELS
) -> list[Verdict]:
    by_key = {t.key.split("_")[0]: t for t in tables}
    runs = runset.ok if runset is not None else None
    return [check_finding(spec, by_key, runs, min_models) for spec in load_findings(path)]


def findings_markdown(verdicts: list[Verdict]) -> str:
    counts = {v: sum(x.verdict == v for x in verdicts) for v in (HOLDS, FAILS, UNKNOWN)}
    lines = [
        "### The paper's findings on these runs",
        "",
        f"{counts[HOLDS]} hold, {counts[FAILS]} fail, {counts[UNKNOWN]} have not enough evidence "
        "(margin in points x100, positive = as the paper says; 95% interval over models, paired by model; "
        "a verdict needs enough models in every task it pools and an interval that excludes 0).",
        "",
        "| § | finding | verdict | margin | 95% CI | models | per task | detail |",
        "|---|---|---|--:|---|---|---|---|",
    ]
    for v in verdicts:
        margin = "" if math.isnan(v.margin) else f"{v.margin:+.2f}"
        ci = "" if math.isnan(v.ci[0]) else f"[{v.ci[0]:+.2f}, {v.ci[1]:+.2f}]"
        verdict = f"**{v.verdict}**" + (f" ({v.reason})" if v.reason else "") + (f" ⚠ {v.flag}" if v.flag else "")
        lines.append(
            f"| {v.section} | {v.claim} | {verdict} | {margin} | {ci} | {v.models} | {'; '.join(v.per_task)} | {v.detail} |"
        )
    return "\n".join(lines) + "\n"


def findings_frame(verdicts: list[Verdict]):
    """The verdicts as data (``findings.csv``): one row per finding, margin and interval in points x100."""
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "id": v.id,
                "section": v.section,
                "claim": v.claim,
                "verdict": v.verdict,
                "reason": v.reason,
                "margin": v.margin,
                "ci_low": v.ci[0],
                "ci_high": v.ci[1],
                "models": v.models,
            }
            for v in verdicts
        ],
        columns=["id", "section", "claim", "verdict", "reason", "margin", "ci_low", "ci_high", "models"],
    )
