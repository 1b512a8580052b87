"""``fashion5k``: 5,000 real Fashion-MNIST images (Xiao et al. 2017), the embedded suite's
second candidate.

The images are the first 500 of each class, in file order, of Fashion-MNIST's official 10,000-image
test split (``t10k-*-idx*-ubyte.gz``), so the suite has the size and class balance of ``mnist5k``
and splits the same way: 4,000 train / 1,000 test with a fixed seed, calibration inputs drawn from
the 4,000 with ``calib.seed``. Fashion-MNIST is harder than MNIST (a CIFAR-ResNet-20 reaches about
87% where it reaches 98% on digits), which leaves pruning more room to separate methods.

The 5,000 images ship inside the package (``data/fashion5k/``, 2.2 MB, with Fashion-MNIST's MIT licence),
so the default suite needs nothing installed: ``dataset.root=null``. ``dataset.root`` may instead name a folder
of the official IDX files — Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``,
``/usr/share/datasets/fashion-mnist``) or a copy of https://github.com/zalandoresearch/fashion-mnist (MIT) —
from whose two test files the same 5,000 are picked (:func:`write_packaged` made the packaged copy that way;
a test checks the two agree where Debian's files exist).
"""

from __future__ import annotations

import functools
import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..schemas import knob
from .base import DATASETS, DataBundle, EmbeddedSplitConfig
from .embedded import _bundle

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
PACKAGED_ROOT = Path(__file__).resolve().parent / "fashion5k"
PACKAGED_FILES = ("fashion5k-images-idx3-ubyte.gz", "fashion5k-labels-idx1-ubyte.gz")
PER_CLASS = 500
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics


@dataclass(frozen=True)
class FashionConfig(EmbeddedSplitConfig):
    root: str | None = knob(None)  # None: the packaged copy; else a folder of the official IDX files


def source_files(root: str | None) -> tuple[Path, Path]:
    """(images, labels) IDX files of ``dataset.root``: the packaged 5,000, or a folder's official test split."""
    if root is None:
        return PACKAGED_ROOT / PACKAGED_FILES[0], PACKAGED_ROOT / PACKAGED_FILES[1]
    folder = Path(str(root)).expanduser()
    return folder / FILES[0], folder / FILES[1]


def check_config(cfg: FashionConfig) -> None:
    missing = [p.name for p in source_files(cfg.root) if not p.is_file()]
    if not missing:
        return
    if cfg.root is None:
        raise ConfigError(
            f"dataset=fashion5k: the packaged copy lacks {', '.join(missing)} in {PACKAGED_ROOT} "
            f"(a damaged install: reinstall ptsbench), or point dataset.root at Fashion-MNIST's IDX files "
            f"(apt-get install dataset-fashion-mnist, files in {DEBIAN_ROOT})"
        )
    raise ConfigError(
        f"dataset.root='{Path(str(cfg.root)).expanduser()}' lacks {', '.join(missing)}: dataset=fashion5k reads "
        f"Fashion-MNIST's test split as IDX files; install Debian's copy (apt-get install dataset-fashion-mnist, "
        f"files in {DEBIAN_ROOT}) or point dataset.root at a folder holding {' and '.join(FILES)}"
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
def load_fashion5k_arrays(root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    image_file, label_file = source_files(root)
    images, labels = read_idx(image_file), read_idx(label_file)
    if len(images) != len(labels):
        raise ConfigError(f"{image_file.parent}: {len(images)} images but {len(labels)} labels")
    keep = first_per_class(labels, PER_CLASS)  # the packaged copy is already exactly these, in order
    x = images[keep].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return x, labels[keep].astype(np.int64)


def write_packaged(root: str | Path = DEBIAN_ROOT, out: Path = PACKAGED_ROOT) -> None:
    """Write the packaged copy: the 5,000 picked from ``root``'s official test files, as gzip'd IDX
    (fixed gzip header time, so the bytes depend on the images only)."""
    image_file, label_file = source_files(str(root))
    images, labels = read_idx(image_file), read_idx(label_file)
    keep = first_per_class(labels, PER_CLASS)
    for name, array in zip(PACKAGED_FILES, (images[keep], labels[keep])):
        header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
        (out / name).write_bytes(gzip.compress(header + np.ascontiguousarray(array).tobytes(), 9, mtime=0))


@DATASETS.register("fashion5k", config=FashionConfig, check=check_config)
def build_fashion5k(cfg: FashionConfig, calib) -> DataBundle:
    check_config(cfg)  # also when called outside a run, whose spec checks it before any heavy work
    x, y = load_fashion5k_arrays(None if cfg.root is None else str(cfg.root))
    return _bundle(
        "fashion5k", x, y, cfg.num_test, cfg.split_seed, calib.num_samples, calib.seed, FASHION_MEAN, FASHION_STD
    )
