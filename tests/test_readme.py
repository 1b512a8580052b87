"""Every command of README.md's ```bash blocks runs as written (in a fresh folder, in order).

- ``make demo`` / ``make test`` and pytest lines are the suite itself: left out; every other ``make``
  line is checked with ``make -n`` (the paper tables need real data).
- ``. .venv/bin/activate`` is the reader's shell setup: the test puts the venv first on PATH instead.
- ``python -m ptsbench.run`` runs get ``debug=fast`` appended (smoke size), then ``paths.output_dir``
  pinned to the folder the command names or defaults to, so an aggregation line that reads another
  folder than its sweep wrote fails here as it would for a user (ptsbench-aggregate exits 1 on no runs).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN = "python -m ptsbench.run"


def bash_lines(text: str) -> list[str]:
    """The command lines of the ```bash blocks (comments stripped, continuation lines joined)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def output_dir(overrides: list[str]) -> str:
    """paths.output_dir of the first job of a command's sweep (comma lists: their first value)."""
    first = [re.sub(r"^([^=\[]+=)([^,\[]*),.*$", r"\1\2", o) for o in overrides if o != "-m"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return str(compose(config_name="config", overrides=first).paths.output_dir)


def as_tested(line: str) -> str | None:
    """The shell line the test runs for a README line, or None for lines it leaves out."""
    words = shlex.split(line)
    if line.startswith(". ") or words[0] in ("pytest",) or "pytest" in words[:3]:
        return None
    if words[0] == "make":
        return None if words[1:2] in (["demo"], ["test"], ["install"]) else f"make -n -C {ROOT} {shlex.join(words[1:])}"
    if line.startswith(RUN) and "-sc" not in words and "--help" not in words:
        overrides = words[3:] + ([] if "debug=fast" in words else ["debug=fast"])
        return f"{shlex.join(words[:3] + overrides)} paths.output_dir={output_dir(words[3:])}"
    return line


def test_the_readme_lines_are_classified_as_documented():
    lines = bash_lines(README.read_text())
    tested = [as_tested(line) for line in lines]
    assert "make demo" in lines and as_tested("make demo") is None
    assert any(t and t.startswith("make -n") and "table2" in t for t in tested)
    assert any(line.startswith("ptsbench-aggregate outputs/records") for line in lines)
    runs = [t for t in tested if t and t.startswith(RUN) and "debug=fast" in t]
    assert runs and all(re.search(r" paths.output_dir=\S+$", t) and t.count("debug=fast") == 1 for t in runs)
    assert as_tested(f"{RUN} -m experiment=demo_alloc").endswith("debug=fast paths.output_dir=outputs/demo")


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    for line in bash_lines(README.read_text()):
        command = as_tested(line)
        if command is None:
            continue
        proc = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
        )
        assert proc.returncode == 0, (
            f"README line `{line}` ran as `{command}`:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
