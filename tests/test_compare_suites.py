"""scripts/compare_suites.py: the default suite is the one with more paper findings at a verdict; a tie
keeps the first (current) suite; findings beyond the paper are shown but do not decide."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from script_modules import load_script


@pytest.fixture(scope="module")
def compare_suites():
    return load_script("compare_suites")


def write_findings(folder: Path, verdicts: dict[str, str]) -> Path:
    (folder / "tables").mkdir(parents=True)
    rows = [
        {
            "id": fid,
            "section": "beyond" if fid.startswith("new") else "5.1.1",
            "claim": f"claim {fid}",
            "verdict": verdict,
            "reason": "" if verdict != "not enough evidence" else "interval spans 0",
            "margin": 3.0 if verdict == "holds" else -1.0,
            "ci_low": 1.0 if verdict == "holds" else -4.0,
            "ci_high": 5.0 if verdict == "holds" else 2.0,
            "models": "CLS 7 models",
        }
        for fid, verdict in verdicts.items()
    ]
    pd.DataFrame(rows).to_csv(folder / "tables" / "findings.csv", index=False)
    return folder


def test_more_paper_verdicts_win_and_beyond_findings_do_not_count(compare_suites, tmp_path):
    nee = "not enough evidence"
    a = write_findings(tmp_path / "a", {"p1": "holds", "p2": nee, "p3": nee, "new1": "holds", "new2": "fails"})
    b = write_findings(tmp_path / "b", {"p1": "holds", "p2": "fails", "p3": nee, "new1": nee, "new2": nee})
    text, chosen = compare_suites.compare({"mnist5k": a, "fashion5k": b})
    assert chosen == "fashion5k"
    assert "| paper verdicts | 1 | 2 |" in text and "| all verdicts | 3 | 2 |" in text
    assert "| 5.1.1 | claim p1 | **holds** +3.0 [+1.0, +5.0] | **holds** +3.0 [+1.0, +5.0] |" in text


def test_a_tie_keeps_the_current_default(compare_suites, tmp_path):
    a = write_findings(tmp_path / "a", {"p1": "holds", "p2": "not enough evidence"})
    b = write_findings(tmp_path / "b", {"p1": "not enough evidence", "p2": "fails"})
    assert compare_suites.compare({"mnist5k": a, "fashion5k": b})[1] == "mnist5k"


def test_a_folder_without_findings_says_what_to_run(compare_suites, tmp_path):
    with pytest.raises(SystemExit, match="run scripts/demo.py --out"):
        compare_suites.compare({"mnist5k": tmp_path})
