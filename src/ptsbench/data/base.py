"""Dataset interface: a bundle with a labelled test split, a training split (for the zoo) and
unlabelled calibration inputs drawn with a recorded seed."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import ConfigError
from ..registry import Registry

DATASETS: Registry = Registry("dataset", "dataset")


@dataclass
class DataBundle:
    name: str
    num_classes: int
    in_chans: int
    img_size: int
    test: Dataset
    train: Dataset
    calib_inputs: torch.Tensor  # (N, C, H, W) float, no labels: PTS sees unlabelled data only
    calib_indices: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def test_loader(self, batch_size: int, num_workers: int = 0) -> DataLoader:
        return DataLoader(self.test, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def indices_digest(idx: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def sample_calibration(num_train: int, num_samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = min(num_samples, num_train)
    return np.sort(rng.permutation(num_train)[:n])


def tensor_split(x: torch.Tensor, y: torch.Tensor) -> TensorDataset:
    return TensorDataset(x, y)


def dataset_root(root, dataset: str, layout: str) -> Path:
    """``dataset.root`` as an existing folder, or a ConfigError saying where to point it and what
    layout is expected (raised during config validation, before any heavy work)."""
    if root is None:
        raise ConfigError(f"dataset.root is required for dataset={dataset}: point it at {dataset} on this machine "
                          f"(dataset.root=/data/{dataset}), laid out as {layout}")
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"dataset.root='{path}' does not exist or is not a folder; point it at {dataset} on this "
                          f"machine, laid out as {layout}")
    return path
