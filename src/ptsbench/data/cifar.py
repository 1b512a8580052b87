"""CIFAR-10 / CIFAR-100 from the local python-pickle layout of torchvision (docs/methods.md#tasks-and-metrics).

``dataset.root`` holds ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``) or
``cifar-100-python/`` (``train``, ``test``), as ``torchvision.datasets.CIFAR10/100(download=True)``
leaves them, or is that folder itself. The files are read directly (each a pickled dict of
``data``: N x 3072 uint8 and ``labels``/``fine_labels``), without torchvision's checksum test,
so a re-packed copy loads too; nothing is downloaded.
- Test split: the 10,000 test images at 32x32 (``dataset.img_size`` resizes them), normalised
  with ``dataset.mean``/``dataset.std`` (match those your checkpoint was trained with).
- Calibration: ``calib.num_samples`` training images drawn with ``calib.seed``, unlabelled.
The split is held in memory as uint8 (30 MB), so ``dataset.eval_cache`` has nothing to cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..safe_load import read_pickled_arrays
from .base import DATASETS, LocalImagesConfig, dataset_root, indices_digest, sample_calibration
from .images import ImageBundle, Normalized, Uint8Images, stack_uint8

LAYOUTS = {  # name -> (folder, train files, test files, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}


def batches_dir(name: str, root) -> Path:
    """The folder holding the batch files: ``root/<folder>`` or ``root`` itself."""
    folder, train, test, _, _ = LAYOUTS[name]
    layout = f"<root>/{folder}/{{{','.join(train + test)}}} (torchvision's CIFAR python layout)"
    root = dataset_root(root, name, layout)
    for candidate in (root / folder, root):
        if all((candidate / f).is_file() for f in train + test):
            return candidate
    raise ConfigError(f"dataset.root='{root}' does not hold the {name} batch files; expected {layout}")


BATCH = "a pickled dict of numpy arrays and lists (torchvision's CIFAR python layout)"


def read_batches(folder: Path, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the batch files, unpickled by an allow-list of numpy's array
    reconstructors (``safe_load``): a batch that names any other Python object is refused."""
    xs, ys = [], []
    for f in files:
        entry = read_pickled_arrays(folder / f, "dataset.root", BATCH)
        if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
            found = sorted(map(str, entry))[:6] if isinstance(entry, dict) else type(entry).__name__
            raise ConfigError(
                f"dataset.root: {folder / f} has no 'data' and '{label_key}' (found {found}); expected {BATCH}"
            )
        try:
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"dataset.root: {folder / f} does not hold 32x32 RGB images and labels ({e}); expected {BATCH}"
            ) from None
        if len(xs[-1]) != len(ys[-1]):
            raise ConfigError(f"dataset.root: {folder / f} has {len(xs[-1])} images but {len(ys[-1])} labels")
    return np.concatenate(xs), np.concatenate(ys)


def _builder(name: str):
    folder_name, train_files, test_files, label_key, num_classes = LAYOUTS[name]

    def check(cfg: LocalImagesConfig) -> None:
        batches_dir(name, cfg.root)

    def build(cfg: LocalImagesConfig, calib_cfg, preprocess=None, cache_dir=None) -> ImageBundle:
        folder = batches_dir(name, cfg.root)
        size = int(cfg.img_size or 32)
        mean, std = tuple(cfg.mean or ()), tuple(cfg.std or ())
        train_x, train_y = read_batches(folder, train_files, label_key)
        test_x, test_y = read_batches(folder, test_files, label_key)
        train = Normalized(Uint8Images(train_x, train_y, size), mean, std)
        calib_idx = sample_calibration(len(train_y), int(calib_cfg.num_samples), int(calib_cfg.seed))
        return ImageBundle(
            name=name,
            num_classes=num_classes,
            in_chans=3,
            img_size=size,
            test=Normalized(Uint8Images(test_x, test_y, size), mean, std),
            train=train,
            calib_inputs=train.normalize(stack_uint8(train.source, calib_idx)),
            calib_indices=calib_idx,
            meta={
                "num_train": len(train_y),
                "num_test": len(test_y),
                "calib_indices_digest": indices_digest(calib_idx),
            },
        )

    build.__name__ = f"build_{name}"
    return build, check


for _name in LAYOUTS:
    _build, _check = _builder(_name)
    DATASETS.register(_name, config=LocalImagesConfig, takes_context=True, check=_check)(_build)
