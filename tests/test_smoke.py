"""``make smoke``: the paper-table experiments at smoke size on the embedded stand-ins complete and aggregate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_runs_every_paper_table_experiment_and_aggregates(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "smoke.py"), "--out", str(tmp_path / "smoke")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for experiment in ("table2", "table4", "table3", "table6"):
        assert f"[smoke] experiment={experiment} debug=fast: exit 0 in" in proc.stdout
    assert "[smoke] 4 of 4 sweeps ok" in proc.stdout
    tables = tmp_path / "smoke" / "tables"
    assert (tables / "tables.md").is_file()
    text = (tables / "tables.md").read_text()
    for title in ("Table 2", "Table 3", "Table 4", "Table 6"):
        assert title in text
    records = list((tmp_path / "smoke" / "records").glob("*.json"))
    # table2: 3 cases x 5 allocators; table4: its 3 runs are table2's l2norm ones (skipped); table3: 3 cases x 12
    # techniques; table6: 6 zoo models at one rate (zoo_resnet20's may be table2's l2norm run)
    assert 15 + 36 + 5 <= len(records) <= 15 + 36 + 6
    # no run failed: every record is ok, and no sweep summary counted a failure (tables' footnotes may say "failed")
    assert all(json.loads(r.read_text())["status"] == "ok" for r in records)
    assert not re.search(r"\b[1-9]\d* failed", proc.stdout)
