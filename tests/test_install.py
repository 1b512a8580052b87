"""The wheel carries its configs: a non-editable install runs from any directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _clean_copy(dst: Path) -> Path:
    """The working tree as a fresh clone would see it: tracked and not-ignored files only."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.mark.slow
def test_non_editable_install_runs_from_another_directory(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy the tracked files from")
    clone = _clean_copy(tmp_path / "clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    # the dependencies (torch, hydra, ...) come from this interpreter's site-packages; ptsbench itself
    # only from the wheel (a .pth path entry processes no nested .pth, so no editable install leaks in)
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    wheels = tmp_path / "dist"
    # built by this interpreter's setuptools (no network: no build isolation), installed by the venv's pip
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(clone),
        ],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("ptsbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "ptsbench/conf/config.yaml",
        "ptsbench/conf/allocator/fcpts_erk.yaml",
        "ptsbench/conf/model/zoo_resnet20.yaml",
        "hydra_plugins/ptsbench_slurm/__init__.py",  # hydra/launcher=slurm: Hydra finds launchers only there
    } <= names
    assert sum(n.startswith("ptsbench/zoo_checkpoints/") and n.endswith(".pt") for n in names) == len(
        list((ROOT / "src/ptsbench/zoo_checkpoints").glob("*.pt"))
    )
    subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(vpy), "-c", "import ptsbench; print(ptsbench.__file__, ptsbench.config_dir())"],
        cwd=elsewhere,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(site) and str(ROOT) not in where, where

    cli = str(venv / "bin" / "ptsbench-run")
    shown = subprocess.run([cli, "--cfg", "job"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "allocator:" in shown.stdout and "name: uniform" in shown.stdout and "rate: 0.5" in shown.stdout

    done = subprocess.run(
        [cli, "model=zoo_resnet20", "allocator=erk", "sparsity.rate=0.7", "calib.num_samples=64", "device=cpu"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = (elsewhere / "outputs" / "records").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok" and rec["choices"]["allocator"] == "erk"
    assert rec["sparsity"]["achieved"] == pytest.approx(0.7, abs=1e-4) and rec["sparse"]["top1"] > 0.1
