"""The plugin protocol end to end: the example plugin of docs/extending.md (an allocator, a mask criterion
and a reconstruction, in a package outside the tree, with its YAMLs in a folder on Hydra's search path)
runs through the CLI, so the page and the code cannot drift apart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ptsbench.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"


def doc_files() -> dict[str, str]:
    """``path -> content`` of every fenced block the page introduces with a line "`path`:"."""
    return dict(re.findall(r"^`([\w./]+)`:\n\n```\w+\n(.*?)```", DOC.read_text(), flags=re.M | re.S))


def test_the_page_shows_a_module_and_its_yamls():
    assert set(doc_files()) == {
        "pts_example/methods.py",
        "conf/allocator/first_dense.yaml",
        "conf/reconstruction/rescale.yaml",
    }


def test_a_registry_refuses_a_name_twice_and_lists_the_valid_ones_on_a_miss():
    reg: Registry[int] = Registry("widget", "widget.kind")
    reg.register("a", label="A", order=1, fast=True)(1)
    with pytest.raises(KeyError, match="widget 'a' is already registered"):
        reg.register("a")(2)
    with pytest.raises(KeyError, match=r"unknown widget 'b' for `widget.kind`; valid choices: a"):
        reg.get("b")
    assert reg.trait("a", "fast") is True and reg.label("a") == "A" and reg.order("a")[0] == 1


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    for rel, text in doc_files().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "pts_example" / "__init__.py").write_text("from . import methods  # noqa: F401\n")
    env = dict(
        os.environ,
        PTSBENCH_PLUGINS="pts_example",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT / "src")]),
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "ptsbench.run",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"paths.output_dir={tmp_path / 'out'}",
        "dataset.num_test=100",
        "calib.num_samples=32",
        *args,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_example_plugin_runs_end_to_end(tmp_path):
    p = _cli(
        tmp_path,
        "allocator=first_dense",
        "allocator.keep=2",
        "sparsity.criterion=largest_first",
        "reconstruction=rescale",
        "reconstruction.factor=1.5",
        "sparsity.rate=0.5",
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (path,) = (tmp_path / "out" / "records").glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "ok"
    assert rec["choices"]["allocator"] == "first_dense" and rec["choices"]["reconstruction"] == "rescale"
    rates = rec["allocation"]["rates"]
    # the record's JSON is key-sorted; in the model's order the first two prunable layers are these
    dense = {n for n, r in rates.items() if r == 0.0}
    assert dense == {"conv1", "layer1.0.conv1"} and all(rates[n] > 0.5 for n in rates.keys() - dense)
    assert rec["sparsity"]["achieved_per_layer"]["conv1"] == 0.0
    assert abs(rec["sparsity"]["achieved"] - 0.5) < len(rates) / rec["sparsity"]["total"]
    assert rec["masks"]["criterion"] == "largest_first"
    assert rec["reconstruction"] == {
        "name": "rescale",
        "factor": 1.5,
        "kept": rec["sparsity"]["total"] - rec["sparsity"]["zeros"],
    }
    # the largest half of the weights gone: the model is at chance, which magnitude pruning at 0.5 is not
    assert rec["dense"]["top1"] > 0.9 and rec["sparse"]["top1"] < 0.3


@pytest.mark.slow
def test_a_plugin_knob_is_checked_like_any_other(tmp_path):
    p = _cli(tmp_path, "allocator=first_dense", "allocator.keep=-1")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == "error: allocator.keep=-1 must be an integer >= 0"
