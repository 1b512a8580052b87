"""Dataset interface: a bundle with a labelled test split, a training split (for the zoo) and
unlabelled calibration inputs drawn with a recorded seed."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import ConfigError
from ..registry import Registry
from ..schemas import Schema, knob

DATASETS: Registry = Registry("dataset", "dataset", plugins="ptsbench.data")
# dataset -> (classes, channels, image size) of the head and stem a model is built with
DATASET_SHAPES = {
    "mnist5k_gen": (10, 1, 28),
    "imagenet": (1000, 3, 224),
    "imagenet_samples": (1000, 3, 224),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "mnist5k": (10, 1, 28),
    "fashion5k": (10, 1, 28),
    "digits": (10, 1, 8),
    "coco2017": (90, 3, 800),
    "voc07": (20, 3, 300),
    "digits_det": (10, 1, 64),
}
log = logging.getLogger("ptsbench")


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
    if num_samples < 0:  # a slice [:-5] would take almost all
        raise ConfigError(f"calib.num_samples={num_samples} must be >= 0")
    if num_samples > num_train:  # a small local dataset: all of it, said out loud (the record has the count used)
        log.warning(
            "[calib] calib.num_samples=%d but the calibration pool has %d images; using all %d",
            num_samples,
            num_train,
            num_train,
        )
    rng = np.random.default_rng(seed)
    n = min(num_samples, num_train)
    return np.sort(rng.permutation(num_train)[:n])


def tensor_split(x: torch.Tensor, y: torch.Tensor) -> TensorDataset:
    return TensorDataset(x, y)


def dataset_root(root, dataset: str, layout: str) -> Path:
    """``dataset.root`` as an existing folder, or a ConfigError saying where to point it and what
    layout is expected (raised during config validation, before any heavy work)."""
    if root is None:
        raise ConfigError(
            f"dataset.root is required for dataset={dataset}: point it at {dataset} on this machine "
            f"(dataset.root=/data/{dataset}), laid out as {layout}"
        )
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"dataset.root='{path}' does not exist or is not a folder; point it at {dataset} on this "
            f"machine, laid out as {layout}"
        )
    return path


# Dataset knobs: types and ranges (each conf/dataset/<name>.yaml gives the values; the defaults below
# serve the datasets whose file leaves a knob out). Builders are registered with their schema and the
# traits ``takes_context`` (receives the model's eval transform and the cache folder) and ``check``
# (checks ``dataset.root`` and its layout before any heavy work).
@dataclass(frozen=True)
class DatasetConfig(Schema):
    name: str = knob()
    tasks: list[str] | None = knob()  # the task(s) the dataset serves; another task= is refused (preflight)


@dataclass(frozen=True)
class EmbeddedSplitConfig(DatasetConfig):
    """mnist5k, fashion5k, digits, mnist5k_gen: a fixed test split of the embedded images."""

    num_test: int = knob(ge=1, required=True)
    split_seed: int = knob(0)
    fid_metric: str | None = knob(None)  # mnist5k_gen: the metric task=gen reports (fid_digits)

    def check(self, path: str) -> None:
        # left out, the split would put every image in both train and test: the zoo scripts build the
        # dataset from its conf/dataset/<name>.yaml, the runs from the composed config
        if self.num_test is None:
            raise ConfigError(
                f"{path}.num_test is unset: {self.name} needs the size of its test split, e.g. {path}.num_test=1000"
            )


DIGIT_MIN_SIDE = 11  # smaller, some MNIST-5k digits keep no pixel above the ink threshold (no box)
CANVAS_BYTES_MAX = 4 << 30  # all canvases are held in memory as float32


@dataclass(frozen=True)
class DigitsDetConfig(DatasetConfig):
    metric: str = knob("map50")
    canvas: int = knob(64, ge=DIGIT_MIN_SIDE, le=1024)
    max_digits: int = knob(3, ge=1, le=32)
    digit_size: list[int] = knob([18, 30])  # [min, max] side of a pasted digit, px
    num_train: int = knob(4000, ge=1)
    num_test: int = knob(400, ge=1)
    seed: int = knob(0, ge=0)

    def check(self, path: str) -> None:
        sizes, canvas = list(self.digit_size), int(self.canvas)
        if (
            len(sizes) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes)
            or not DIGIT_MIN_SIDE <= sizes[0] <= sizes[1] <= canvas
        ):
            raise ConfigError(
                f"{path}.digit_size=[{','.join(map(str, sizes))}] must be [min, max] with {DIGIT_MIN_SIDE} <= min "
                f"<= max <= {path}.canvas={canvas} (px; smaller digits can lose all their ink), e.g. "
                f"{path}.digit_size=[18,30]"
            )
        need = (int(self.num_train) + int(self.num_test)) * canvas * canvas * 4
        if need > CANVAS_BYTES_MAX:
            raise ConfigError(
                f"{path}.num_train={self.num_train} + {path}.num_test={self.num_test} canvases of {canvas}x{canvas} "
                f"need {need / 2**30:.1f} GiB in memory (at most {CANVAS_BYTES_MAX >> 30} GiB); lower them or "
                f"{path}.canvas"
            )


@dataclass(frozen=True)
class LocalImagesConfig(DatasetConfig):
    """A dataset read from ``root`` on this machine (CIFAR, ImageNet, LSUN)."""

    root: str | None = knob(required=True)  # null or ???: the builder says what it needs
    img_size: int | None = knob(None, ge=1)
    mean: list[float] | None = knob(None)
    std: list[float] | None = knob(None)
    num_classes: int | None = knob(None, ge=1)
    num_workers: int = knob(0, ge=0)
    eval_cache: bool = knob(False)
    max_images: int = knob(10000, ge=0)
    prompt: str | None = knob(None)
    fid_metric: str | None = knob(None)


@dataclass(frozen=True)
class CocoConfig(DatasetConfig):
    """COCO-2017 from ``root`` on this machine."""

    root: str | None = knob(required=True)  # null or ???: the builder says what it needs
    metric: str = knob("map")  # primary metric of task=det: COCO mAP@[.5:.95]
    split: str = knob("val2017")
    calib_split: str = knob("train2017")
    calib_size: int = knob(512, ge=1)  # calibration images: shorter side resized, centre-cropped square
    num_test: int | None = knob(None, ge=1)  # evaluate the first N images by id (null: the whole split)


@dataclass(frozen=True)
class VocConfig(CocoConfig):
    """VOC2007 from ``root`` on this machine."""

    metric: str = knob("map50")  # primary metric of task=det: VOC mAP@0.5
    split: str = knob("test")
    calib_split: str = knob("trainval")
    calib_size: int = knob(300, ge=1)


@dataclass(frozen=True)
class CalibConfig(Schema):
    """conf/calib/default.yaml: the calibration images allocators and reconstruction learn from."""

    num_samples: int = knob(1024, ge=1)  # paper §4: 1,024 calibration images
    seed: int = knob(0, ge=0)

    @classmethod
    def option_name(cls, values):
        return "default"
