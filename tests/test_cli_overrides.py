"""Command lines Hydra or a launcher would end in a traceback are refused first, in one line that says
what to type: a value the shell split at a space, a value Hydra's grammar needs quoted, a
``hydra.launcher.n_jobs`` that runs no job, and ``hydra/launcher=slurm`` where Slurm's tools are missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ptsbench import slurm_cluster
from ptsbench.config.overrides import check_launcher_overrides, check_override_syntax
from ptsbench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def refusal(check, argv: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        check(argv)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_a_value_split_at_a_space_is_refused_with_the_quoted_form():
    msg = refusal(check_override_syntax, ["-m", "model.weights=/a", "b/c.pt", "sparsity.rate=0.5"])
    assert "'model.weights=\"/a b/c.pt\"'" in msg


@pytest.mark.parametrize("text", ["paths.output_dir=~/ptsout", "model.weights=/a b(1)/c.pt"])
def test_a_value_hydra_cannot_parse_says_to_quote_it(text):
    key, _, value = text.partition("=")
    msg = refusal(check_override_syntax, [text])
    assert msg.startswith(f"{key}:") and f"'{key}=\"{value}\"'" in msg


def test_ordinary_command_lines_pass():
    check_override_syntax(["-m", "sparsity.rate=0.5,0.6", "allocator=uniform,erk", "--cfg", "job", "~seed"])
    check_override_syntax(["-cd", "/some/dir", "model.weights='/a b/c.pt'", "paths.output_dir='~/x'"])
    check_launcher_overrides(["hydra.launcher.n_jobs=4", "hydra.launcher.n_jobs=-1"])


@pytest.mark.parametrize("value", ["0", "abc", "1.5"])
def test_n_jobs_that_runs_no_job_is_refused(value):
    msg = refusal(check_launcher_overrides, ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={value}"])
    assert msg.startswith(f"hydra.launcher.n_jobs={value}:") and "positive" in msg


def test_slurm_without_its_tools_names_them(monkeypatch):
    monkeypatch.setattr(slurm_cluster.shutil, "which", lambda tool: None if tool in ("sbatch", "srun") else "/x")
    with pytest.raises(ConfigError, match=r"hydra/launcher=slurm: no Slurm here \(sbatch, srun not on PATH\)"):
        slurm_cluster.read_partition(None)


@pytest.mark.slow  # the CLI in a subprocess
def test_the_cli_prints_one_line_and_exits_2(tmp_path):
    for args in (["model.weights=/a", "b/c.pt"], ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0"]):
        cmd = [sys.executable, "-m", "ptsbench.run", *args, f"paths.output_dir={tmp_path}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
        assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())
