"""``ptsbench-aggregate RECORDS_DIR --out DIR``: run records -> the five PTSBench track tables.

Reads every run record under RECORDS_DIR (any depth), keeps one per config digest, and writes
to DIR, for Tables 2 (allocation), 3 (reconstruction), 6 (architecture + size robustness),
4 (tasks) and 5 (ranking): ``tableN_*.md|csv|tex``, one row per cell with n_models, n_runs and the
95% interval over models in ``tableN_*_cells.csv``, all of them in ``tables.md``, the paper's
directional findings checked on these runs in ``findings.md``, G_size per model size in
``table6_sizes.csv``, the missing and failed runs in ``gaps.md|csv``, every knob each comparison held
fixed in ``held_fixed.csv``, every run in ``runs.csv``, the figures in ``DIR/plots/*.png``, and one
self-contained page with all of it, ``report.html`` (plus ``report.png``, its screenshot, where
Chromium is installed). It prints the Markdown tables and the findings. Compared rows are matched
(the same model x dataset x rate x seed cells, differing only in the compared knob; ``--unmatched``
pools every run instead and Table 5 then skips the rows that lack cells). A finding holds or fails
only on ``--min-models`` (3) models per task it pools. Failed runs, missing cells, absent tasks
and refused records (an unknown schema version) are reported, never fatal; ``--strict`` turns them
into exit status 3 (for CI). ``--score agreement`` scores classification runs by their top-1 agreement
with the dense model (label-free) instead of their relative top-1; the other tasks keep their metric.

Formulas: ``ptsbench.metrics``; table rules: the docstrings of ``ptsbench.tables.*``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from .tables import beyond_tables, build_tables, load_runs, methods_table, paper_methods, rate_curves
from .tables.browser import screenshot
from .tables.findings import check_findings, findings_frame, findings_markdown
from .tables.reconstruction import parse_baseline
from .tables.render import gaps_frame, to_markdown, write_table
from .tables.report import report_html
from .tables.runs import SCORES
from .tables.verdicts import MIN_MODELS

log = logging.getLogger("ptsbench")


def _cell(v) -> str:
    return "" if v is None or v != v else str(v)  # v != v: NaN


def _gaps_markdown(gaps, failed_runs) -> str:
    """Every gap, one line each (gaps.md)."""
    lines = ["### Gaps: runs a table expected but did not get", ""]
    if gaps.empty:
        lines.append("none")
    else:
        cols = [c for c in gaps.columns if c != "error" and gaps[c].notna().any()] + ["error"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in gaps[cols].itertuples(index=False)]
    if len(failed_runs):
        lines += ["", f"Failed runs ({len(failed_runs)}):", ""]
        lines += [f"- {r['name']}: {r['error'] or 'no metrics in record'}" for _, r in failed_runs.iterrows()]
    return "\n".join(lines) + "\n"


def _gaps_summary(gaps, failed_runs, limit: int = 20) -> str:
    """The console view: gaps grouped by table, row, kind, task and rate, with the runs' models."""
    if gaps.empty and not len(failed_runs):
        return "### Gaps: none (every table cell has all its runs)\n"
    lines = [f"### Gaps: {len(gaps)} run(s) missing or failed ('*' cells average fewer runs); full list in gaps.md", ""]
    if len(gaps):
        keys = ["table", "row", "kind", "task", "rate"]
        g = gaps.assign(**{k: gaps[k].map(_cell) for k in keys if k in gaps}).groupby(
            [k for k in keys if k in gaps], sort=False
        )
        lines += ["| table | row | kind | task | rate | runs | models |", "|---|---|---|---|---|--:|---|"]
        for n, (key, grp) in enumerate(g):
            if n == limit:
                lines.append(f"| ... | {g.ngroups - limit} more groups in gaps.md | | | | | |")
                break
            models = sorted({_cell(m) for m in grp.get("model", [])})
            more = f", ... (+{len(models) - 3})" if len(models) > 3 else ""
            lines.append("| " + " | ".join(map(str, key)) + f" | {len(grp)} | {', '.join(models[:3])}{more} |")
    if len(failed_runs):
        lines += ["", f"Failed runs ({len(failed_runs)}):"]
        lines += [
            f"- {r['name']}: {r['error'] or 'no metrics in record'}" for _, r in failed_runs.head(limit).iterrows()
        ]
        if len(failed_runs) > limit:
            lines.append(f"- ... {len(failed_runs) - limit} more in gaps.md")
    return "\n".join(lines) + "\n"


def _summary(runset, score: str = "metric") -> dict:
    return {
        "score": score,
        "findings": [],
        "files": runset.files,
        "runs": len(runset.runs),
        "ok": len(runset.ok),
        "failed": len(runset.failed),
        "duplicates": runset.duplicates,
        "unreadable": len(runset.unreadable),
        "refused": len(runset.refused),
        "gaps": 0,
        "tables": [],
        "plots": [],
    }


def _head(records_dir, summary: dict) -> str:
    return (
        f"PTSBench tables from {records_dir}: {summary['ok']} ok run(s), {summary['failed']} failed, "
        f"{summary['duplicates']} duplicate record(s) dropped, {summary['unreadable']} unreadable file(s), "
        f"{summary['refused']} refused, {summary['gaps']} gap(s)"
        + ("" if summary["score"] == "metric" else f"; score: {summary['score']} (CLS: top-1 agreement with dense)")
    )


def _skipped_files(runset) -> str:
    """Name every file that was not read: a truncated, foreign or too new file must be findable."""
    text = ""
    if runset.unreadable:
        text += (
            "Unreadable files (not run records, or damaged):\n" + "\n".join(f"- {u}" for u in runset.unreadable) + "\n"
        )
    if runset.refused:
        text += "Refused records (unknown schema version):\n" + "\n".join(f"- {r}" for r in runset.refused) + "\n"
    return text


def _write(out: Path, runset, tables, findings, gaps, sizes, head: str, markdown: str, plots: bool) -> dict:
    """Every file of the table set; returns {'tables': [...], 'plots': [...], 'report': path}."""
    written = [str(p) for t in tables for p in write_table(t, out)]
    (out / "tables.md").write_text(f"{head}\n\n{markdown}\n{_gaps_summary(gaps, runset.failed)}")
    (out / "gaps.md").write_text(_gaps_markdown(gaps, runset.failed))
    gaps.to_csv(out / "gaps.csv", index=False)
    sizes.to_csv(out / "table6_sizes.csv", index=False, float_format="%.4f")  # G_size per model size
    pd.DataFrame([f for t in tables for f in t.fixed]).to_csv(out / "held_fixed.csv", index=False)
    runset.runs.drop(columns=["per_layer", "init_per_layer", "knobs", "setting"]).to_csv(out / "runs.csv", index=False)
    (out / "findings.md").write_text(findings_markdown(findings))
    findings_frame(findings).to_csv(out / "findings.csv", index=False, float_format="%.4f")
    written += [str(out / "findings.md"), str(out / "findings.csv")]
    made = [str(p) for p in _plots(paper_methods(runset), sizes, out / "plots")] if plots else []
    page = out / "report.html"
    page.write_text(report_html(head, tables, findings, gaps, runset.failed, [Path(p) for p in made]))
    shot = screenshot(page, out / "report.png")
    return {"tables": written + [str(page)] + ([str(shot)] if shot else []), "plots": made}


class TablesNotWritten(Exception):
    """``--out`` cannot hold the table set; nothing of it was written (one line, for the CLI)."""


def _replace_whole(out: Path, write) -> dict:
    """``write(folder)`` into a temporary sibling of ``out``, renamed to ``out`` only once every file is
    there: a failure mid-way (a full disk) leaves the previous table set, or nothing, never a part of one.
    Returns ``write``'s summary with its paths under ``out``."""
    blocker = next((p for p in (out, *out.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise TablesNotWritten(f"--out {out}: '{blocker}' is a file, not a folder; pass a folder for the tables")
    tmp, old = out.parent / f".{out.name}.tmp-{os.getpid()}", out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        summary = write(tmp)
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        why = f"{e.strerror or type(e).__name__}: {str(e.filename or out).splitlines()[0]}"
        raise TablesNotWritten(f"--out {out}: the tables could not be written ({why}); nothing was changed") from None
    shutil.rmtree(old, ignore_errors=True)
    moved = {
        k: [str(out / Path(p).relative_to(tmp)) for p in v] if isinstance(v, list) else v for k, v in summary.items()
    }
    return moved


def aggregate(
    records_dir: str | Path,
    out_dir: str | Path | None,
    model_allocator: str = "l2norm",
    plots: bool = True,
    echo=print,
    matched: bool = True,
    recon_baseline: dict | None = None,
    min_models: int = MIN_MODELS,
    score: str = "metric",
) -> dict:
    """Build, write (when ``out_dir``) and echo the tables and findings; returns a summary dict.
    ``score`` (one of ``tables.runs.SCORES``): what each run's relative score is."""
    runset = load_runs(records_dir, score)
    summary = _summary(runset, score)
    if runset.runs.empty:
        echo(f"no run records under {records_dir}\n" + _skipped_files(runset))
        return summary
    tables, sizes = build_tables(runset, model_allocator, matched, recon_baseline, min_models)
    tables += beyond_tables(runset, matched)  # Table 2 on Wanda masks, when there are Wanda runs
    methods = methods_table(runset)
    if not methods.values.empty:  # Wanda / SparseGPT / N:M runs present
        tables.append(methods)
    findings = check_findings(tables, paper_methods(runset), min_models=min_models)
    summary["findings"] = [(f.id, f.verdict, f.margin) for f in findings]
    gaps = gaps_frame(tables)
    summary["gaps"] = len(gaps)
    markdown = "\n".join(to_markdown(t) for t in tables)
    head = _head(records_dir, summary)
    echo(f"\n{head}\n\n{markdown}\n{_gaps_summary(gaps, runset.failed)}")
    echo(findings_markdown(findings))
    if runset.unreadable or runset.refused:
        echo(_skipped_files(runset))
    if out_dir is not None:
        out = Path(out_dir)
        summary.update(
            _replace_whole(out, lambda tmp: _write(tmp, runset, tables, findings, gaps, sizes, head, markdown, plots))
        )
        echo(f"tables written to {out}/ ({len(summary['tables'])} files, {len(summary['plots'])} plots)")
    return summary


def _plots(runset, sizes, plot_dir: Path) -> list[Path]:
    from .plots.tracks import plot_allocations, plot_rate_curves, plot_size_loss

    made = [
        plot_size_loss(sizes, plot_dir / "fig5_size_loss.png"),
        plot_rate_curves(rate_curves(runset), plot_dir / "rate_curves_by_allocator.png"),
    ]
    made += plot_allocations(runset.ok, plot_dir)
    return [p for p in made if p is not None]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records_dir", help="directory holding run records (searched recursively)")
    ap.add_argument("--out", default=None, help="directory for the table files (default: RECORDS_DIR/../tables)")
    ap.add_argument(
        "--model-allocator",
        default="l2norm",
        help="allocator whose no-reconstruction runs feed Tables 4 and 6 (paper: L2Norm); 'all' pools them",
    )
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    ap.add_argument(
        "--unmatched",
        action="store_true",
        help="pool every run per cell instead of matching rows on common cells; Table 5 then leaves "
        "rows that lack cells unranked",
    )
    ap.add_argument(
        "--recon-baseline",
        default="",
        metavar="KNOB=VALUE,...",
        help="Table 3 baseline the aspects vary around (default granularity=block,input=sparse,error_correction=false)",
    )
    ap.add_argument(
        "--min-models",
        type=int,
        default=MIN_MODELS,
        help="independent models every task (family) a finding or a Table 5 order rests on needs "
        f"before it may say holds/fails or '>' (default {MIN_MODELS})",
    )
    ap.add_argument(
        "--score",
        choices=SCORES,
        default="metric",
        help="what a run's relative score is: 'metric' (default), its primary metric over the dense one; "
        "'agreement', for classification runs their top-1 agreement with the dense model (label-free; "
        "the other tasks keep their metric)",
    )
    ap.add_argument("--strict", action="store_true", help="exit 3 when any run failed or a table has gaps")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records = Path(args.records_dir)
    if not records.is_dir():
        print(
            f"error: RECORDS_DIR '{records}' is not a directory; pass the sweep's records folder, "
            "e.g. outputs/demo/records"
        )
        return 2
    try:
        baseline = parse_baseline(args.recon_baseline)
    except ValueError as e:
        print(f"error: {e}")
        return 2
    out = Path(args.out) if args.out else records.parent / "tables"
    if args.min_models < 2:
        print(f"error: --min-models={args.min_models} must be >= 2 (one model has no interval)")
        return 2
    try:
        summary = _aggregate_cli(records, out, args, baseline)
    except TablesNotWritten as e:
        print(f"error: {e}")
        return 2
    if not summary["runs"]:
        return 1
    return 3 if args.strict and (summary["failed"] or summary["gaps"] or summary["refused"]) else 0


def _aggregate_cli(records: Path, out: Path, args, baseline) -> dict:
    return aggregate(
        records,
        out,
        args.model_allocator,
        plots=not args.no_plots,
        matched=not args.unmatched,
        recon_baseline=baseline,
        min_models=args.min_models,
        score=args.score,
    )


if __name__ == "__main__":
    raise SystemExit(main())
