"""`ptsbench-models` lists every model and marks those that need a local checkpoint; `ptsbench-aggregate`
names unreadable files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ptsbench.models import zoo, zoo_checkpoint_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.num_test=100", "calib.num_samples=32", "eval.batch_size=100"]


def zoo_state(seed: int | None = None) -> dict:
    if seed is None:
        return torch.load(zoo_checkpoint_path("cifar_resnet20", "mnist5k"), map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    return zoo.ZOO_ARCHS.get("cifar_resnet20")(10, 1, 28).state_dict()


def cli(*args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptsbench.run", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def test_ptsbench_models_lists_every_model_and_marks_local_checkpoints(capsys):
    from ptsbench.list_models import main, model_configs

    main(["--no-params"])
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert set(rows) == {str(c.name) for c in model_configs()}
    assert "local checkpoint required" in rows["ldm"] and "local checkpoint required" in rows["sd"]
    assert "imagenet" not in rows["zoo_ddpm_digits"] and "mnist5k_gen" in rows["zoo_ddpm_digits"]
    main(["unet"])
    out = capsys.readouterr().out
    assert {ln.split()[0] for ln in out.splitlines()[1:]} == {
        "zoo_ddpm_digits_x0.5",
        "zoo_ddpm_digits",
        "zoo_ddpm_digits_x1.5",
        "ldm",
        "sd",
    }


def test_aggregate_names_unreadable_files(tmp_path, capsys):
    from ptsbench.aggregate import aggregate

    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "broken.json").write_text("{trunc")
    aggregate(tmp_path / "records", None, plots=False)
    assert "broken.json" in capsys.readouterr().out
