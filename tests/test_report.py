"""report.html: one self-contained page with every table (values with their n and intervals), every
finding with its verdict and reason, the gaps and every figure inlined; opened in headless Chromium
it renders them all with no console error, and ptsbench-aggregate saves its screenshot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_aggregate import records_dir  # noqa: F401 - the synthetic record set fixture

from ptsbench.aggregate import main
from ptsbench.tables.browser import find_chromium, render
from ptsbench.tables.findings import load_findings

TABLES = ("table2_allocation", "table3_reconstruction", "table6_architecture", "table4_tasks", "table5_ranking")
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian 'chromium'; .ci/run installs it)")


@pytest.fixture
def report(records_dir, tmp_path):  # noqa: F811
    out = tmp_path / "tables"
    assert main([str(records_dir), "--out", str(out)]) == 0
    return out


def test_the_page_is_self_contained(report):
    page = (report / "report.html").read_text()
    assert "<script" not in page and not re.search(r"(src|href)=\"(?!#|data:image/png;base64,)", page)
    assert page.count("<img ") == len(list((report / "plots").glob("*.png"))) >= 2
    for key in TABLES:
        assert f'<section id="table-{key}">' in page
    assert page.count('<tr id="finding-') == len(load_findings())
    assert "90.00 (n=3)" in page and "50.00 (n=1)" in page  # the n, where a cell has no interval
    assert "1 GEN model: needs 3 per task" in page  # a verdict's reason
    assert '<section id="gaps"><h2>Gaps: 6 run(s)' in page


@needs_chromium
def test_chromium_renders_every_table_finding_and_plot_without_console_errors(report):
    shown = render(report / "report.html", CHROMIUM)
    assert shown.returncode == 0 and shown.console == [], shown.console
    for key in TABLES:
        assert f'id="table-{key}"' in shown.dom
    for finding in load_findings():
        assert f'id="finding-{finding["id"]}"' in shown.dom
    for png in (report / "plots").glob("*.png"):
        assert f'id="plot-{png.stem}"' in shown.dom
    assert (report / "report.png").read_bytes()[:4] == b"\x89PNG"  # ptsbench-aggregate's screenshot


@needs_chromium
def test_the_console_check_sees_a_script_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<html><body><p id="x">x</p><script>throw new Error("boom")</script></body></html>')
    shown = render(page, CHROMIUM)
    assert 'id="x"' in shown.dom and any("Uncaught Error: boom" in line for line in shown.console)


def test_without_chromium_the_report_is_still_written(records_dir, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PTSBENCH_CHROMIUM", str(tmp_path / "no-such-browser"))
    assert main([str(records_dir), "--out", str(tmp_path / "t"), "--no-plots"]) == 0
    assert (tmp_path / "t" / "report.html").stat().st_size > 0 and not Path(tmp_path / "t" / "report.png").exists()
