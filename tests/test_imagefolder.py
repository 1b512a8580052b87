"""ImageFolder labels: val/ uses train/'s class map; a val/ class train/ lacks is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptsbench.errors import ConfigError
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


def _imagefolder(root: Path, train, val) -> Path:
    import numpy as np
    from PIL import Image

    for split, classes in (("train", train), ("val", val)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.fromarray(np.full((12, 12, 3), 30 * k + i, np.uint8)).save(root / split / c / f"{i}.JPEG")
    return root


def test_val_subset_of_non_wnid_classes_keeps_the_train_labels(tmp_path):
    from ptsbench.data import build_data

    root = _imagefolder(tmp_path, train=("cat", "dog", "eel"), val=("dog", "eel"))
    data = build_data(
        {"name": "imagenet", "root": str(root), "num_classes": 3},
        {"num_samples": 2, "seed": 0},
    )
    assert sorted(label for _, label in data.test.source.samples) == [1, 1, 2, 2]  # dog=1, eel=2, not 0/1


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    from ptsbench.data import build_data

    root = _imagefolder(tmp_path, train=("cat", "dog"), val=("dog", "fox"))
    with pytest.raises(ConfigError, match="fox"):
        build_data(
            {"name": "imagenet", "root": str(root), "num_classes": 2},
            {"num_samples": 2, "seed": 0},
        )
