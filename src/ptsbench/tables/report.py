"""One page to look at: every table, the findings with their verdicts and reasons, the gaps and the
figures in a single self-contained ``report.html`` (no script, no network: figures are inlined as
base64 PNG, the style sheet is inline), readable in any browser and printable.

Each table keeps what the Markdown shows (value ± half-width of the 95% interval over models, or
(n=k) where there is none, the best value in bold, flags) and its notes; each element carries a
stable id (``table-table2_allocation``, ``finding-alloc-uniform-worst``, ``plot-fig5_size_loss``)
so a test or a reader's bookmark can find it.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from .base import TrackTable
from .findings import Verdict
from .render import MISSING, cell_strings, index_names

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1240px;
color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0 4px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f5;text-align:left}td.label,th.label{text-align:left}td.text{text-align:left;white-space:normal}
ul.notes{font-size:12px;color:#444;margin:4px 0 12px;padding-left:18px}
.holds{background:#e3f4e6}.fails{background:#fbe4e4}.unknown{background:#f1f1f1}
.flag{color:#a35a00;font-weight:600}.summary{color:#444}figure{margin:12px 0}
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:12px;color:#555}
"""
VERDICT_CLASS = {"holds": "holds", "fails": "fails"}


def _e(text) -> str:
    return html.escape(str(text))


def table_html(table: TrackTable) -> str:
    """One track table as an HTML <section> with its notes."""
    names = index_names(table)
    head = "".join(f'<th class="label">{_e(n)}</th>' for n in names)
    head += "".join(f"<th>{_e(c)}</th>" for c in table.values.columns)
    body = []
    kinds = ["text" if dtype == object else "num" for dtype in table.values.dtypes]  # noqa: E721 - a dtype, not a type
    for label, cells in cell_strings(table, ("<b>", "</b>"), MISSING, "*", " ± ", escape=_e):
        tds = "".join(f'<td class="label">{_e(x)}</td>' for x in label)
        tds += "".join(f'<td class="{kind}">{c}</td>' for kind, c in zip(kinds, cells))
        body.append(f"<tr>{tds}</tr>")
    if table.values.empty:
        body.append(f'<tr><td class="label" colspan="{len(names) + 1}">(no data)</td></tr>')
    notes = "".join(f"<li>{_e(n)}</li>" for n in table.notes)
    if table.gaps:
        notes += f"<li>{len(table.gaps)} gap(s): runs missing or failed (see Gaps)</li>"
    return (
        f'<section id="table-{_e(table.key)}"><h2>{_e(table.title)}</h2>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f'<ul class="notes">{notes}</ul></section>'
    )


def findings_html(verdicts: list[Verdict]) -> str:
    rows = []
    for v in verdicts:
        margin = "" if math.isnan(v.margin) else f"{v.margin:+.2f}"
        ci = "" if math.isnan(v.ci[0]) else f"[{v.ci[0]:+.2f}, {v.ci[1]:+.2f}]"
        flag = f' <span class="flag">⚠ {_e(v.flag)}</span>' if v.flag else ""
        cells = [v.section, v.claim, v.verdict, v.reason, margin, ci, v.models, "; ".join(v.per_task), v.detail]
        tds = "".join(f'<td class="text">{_e(c)}</td>' for c in cells[:2])
        tds += f'<td class="text {VERDICT_CLASS.get(v.verdict, "unknown")}"><b>{_e(v.verdict)}</b>{flag}</td>'
        tds += f'<td class="text">{_e(cells[3])}</td><td>{margin}</td><td>{ci}</td>'
        tds += "".join(f'<td class="text">{_e(c)}</td>' for c in cells[6:])
        rows.append(f'<tr id="finding-{_e(v.id)}">{tds}</tr>')
    head = "".join(
        f"<th>{h}</th>"
        for h in ("§", "finding", "verdict", "reason", "margin", "95% CI", "models", "per task", "detail")
    )
    return (
        '<section id="findings"><h2>The paper\'s findings on these runs</h2>'
        '<p class="summary">margin in points x100, positive = as the paper says; 95% interval over models, '
        "paired by model; a verdict needs enough models in every task it pools and an interval that excludes 0.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def gaps_html(gaps: pd.DataFrame, failed_runs: pd.DataFrame) -> str:
    if gaps.empty and not len(failed_runs):
        return '<section id="gaps"><h2>Gaps</h2><p>none: every table cell has all its runs</p></section>'
    cols = [c for c in gaps.columns if gaps[c].notna().any() and c != "error"] + (["error"] if len(gaps) else [])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = "".join(
        "<tr>" + "".join(f'<td class="text">{_e("" if pd.isna(v) else v)}</td>' for v in r) + "</tr>"
        for r in gaps[cols].itertuples(index=False)
    )
    failed = "".join(
        f"<li>{_e(r['name'])}: {_e(r['error'] or 'no metrics in record')}</li>" for _, r in failed_runs.iterrows()
    )
    return (
        f'<section id="gaps"><h2>Gaps: {len(gaps)} run(s) a table expected but did not get</h2>'
        + (f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>" if len(gaps) else "")
        + (f"<p>Failed runs ({len(failed_runs)}):</p><ul>{failed}</ul>" if failed else "")
        + "</section>"
    )


def plots_html(plots: list[Path]) -> str:
    figures = []
    for p in plots:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        figures.append(
            f'<figure id="plot-{_e(Path(p).stem)}"><img alt="{_e(Path(p).stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(Path(p).name)}</figcaption></figure>"
        )
    return f'<section id="plots"><h2>Figures</h2>{"".join(figures) or "<p>no figures</p>"}</section>'


def report_html(
    summary: str, tables: list[TrackTable], verdicts: list[Verdict], gaps: pd.DataFrame, failed, plots: list[Path]
) -> str:
    """The whole page."""
    toc = "".join(f'<li><a href="#table-{_e(t.key)}">{_e(t.title)}</a></li>' for t in tables)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>PTSBench report</title><style>{STYLE}</style></head><body>"
        f'<h1>PTSBench report</h1><p class="summary">{_e(summary)}</p>'
        f'<ul><li><a href="#findings">Findings</a></li>{toc}<li><a href="#gaps">Gaps</a></li>'
        '<li><a href="#plots">Figures</a></li></ul>'
        + findings_html(verdicts)
        + "".join(table_html(t) for t in tables)
        + gaps_html(gaps, failed)
        + plots_html(plots)
        + "</body></html>\n"
    )
