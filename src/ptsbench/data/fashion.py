"""``fashion5k``: 5,000 real Fashion-MNIST images (Xiao et al. 2017), the embedded suite's
second candidate.

The images are the first 500 of each class, in file order, of Fashion-MNIST's official 10,000-image
test split (``t10k-*-idx*-ubyte.gz``), so the suite has the size and class balance of ``mnist5k``
and splits the same way: 4,000 train / 1,000 test with a fixed seed, calibration inputs drawn from
the 4,000 with ``calib.seed``. Fashion-MNIST is harder than MNIST (a CIFAR-ResNet-20 reaches about
87% where it reaches 98% on digits), which leaves pruning more room to separate methods.

``dataset.root`` is the folder of the IDX files: by default Debian's ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``, ``/usr/share/datasets/fashion-mnist``), or a copy of
the four files from https://github.com/zalandoresearch/fashion-mnist (MIT). Only the two test files
are read.
"""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..schemas import knob
from .base import DATASETS, DataBundle, EmbeddedSplitConfig
from .embedded import _bundle

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PER_CLASS = 500
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


@dataclass(frozen=True)
class FashionConfig(EmbeddedSplitConfig):
    root: str = knob(DEBIAN_ROOT)


def check_config(cfg: FashionConfig) -> None:
    root = Path(str(cfg.root)).expanduser()
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise ConfigError(
            f"dataset.root='{root}' lacks {', '.join(missing)}: dataset=fashion5k reads Fashion-MNIST's test "
            f"split as IDX files; install Debian's copy (apt-get install dataset-fashion-mnist, files in "
            f"{DEBIAN_ROOT}) or point dataset.root at a folder holding {' and '.join(FILES)}"
        )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format): magic 0x0000 + type byte 0x08 (ubyte) + rank, big-endian
    int32 dimensions, then the data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ConfigError(f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    rank = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=rank, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(dims)):
        raise ConfigError(f"{path}: header says {tuple(dims)} ({int(np.prod(dims))} values), file holds {data.size}")
    return data.reshape(tuple(dims))


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of each class, in file order."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    short = [int(c) for c, idx in zip(np.unique(labels), picked) if len(idx) < per_class]
    if short:
        raise ConfigError(f"Fashion-MNIST test split has fewer than {per_class} images of class(es) {short}")
    return np.sort(np.concatenate(picked))


@functools.lru_cache(maxsize=2)
def load_fashion5k_arrays(root: str = DEBIAN_ROOT) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(root).expanduser()
    images, labels = read_idx(folder / FILES[0]), read_idx(folder / FILES[1])
    if len(images) != len(labels):
        raise ConfigError(f"{folder}: {len(images)} images but {len(labels)} labels")
    keep = first_per_class(labels, PER_CLASS)
    x = images[keep].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return x, labels[keep].astype(np.int64)


@DATASETS.register("fashion5k", config=FashionConfig, check=check_config)
def build_fashion5k(cfg: FashionConfig, calib) -> DataBundle:
    check_config(cfg)  # also when called outside a run, whose spec checks it before any heavy work
    x, y = load_fashion5k_arrays(str(cfg.root))
    return _bundle(
        "fashion5k", x, y, cfg.num_test, cfg.split_seed, calib.num_samples, calib.seed, FASHION_MEAN, FASHION_STD
    )
