"""Reference image sets of the GEN task (docs/methods.md#tasks-and-metrics): what generated samples are compared with.

- ``lsun_churches`` / ``lsun_bedroom`` (paper §3.1, Yu et al. 2015): a local folder of images
  (``dataset.root``; jpg/jpeg/png/webp, searched recursively), center-cropped and resized to
  ``dataset.img_size``; at most ``dataset.max_images`` of them (sorted paths, so the set is fixed).
  The LSUN lmdb export is not read (it would need the ``lmdb`` package): export it to image
  files first (LSUN's ``data.py export``).
- ``mnist5k_gen``: the MNIST-5k digits in [0, 1] with the same fixed 4,000/1,000 split as
  ``mnist5k``; the embedded DDPM trains on the 4,000 and is scored against the 1,000.
A bundle's ``test`` yields ``(image in [0, 1], 0)``. Its ``calib_inputs`` are empty: diffusion
calibration inputs are captured from the dense model's own sampling (GenerationTask).
``meta`` carries the text ``prompt`` for conditional models; the config carries ``fid_metric``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from .base import (
    DATASETS,
    DataBundle,
    EmbeddedSplitConfig,
    LocalImagesConfig,
    dataset_root,
    indices_digest,
    tensor_split,
)
from .embedded import fixed_split, load_mnist5k_arrays

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
LSUN_PROMPTS = {"lsun_churches": "a photo of a church", "lsun_bedroom": "a photo of a bedroom"}


class ImageFolderUnit(Dataset):
    """Image files -> (float RGB tensor in [0, 1], center-cropped and resized to ``size``, 0)."""

    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from torchvision.transforms import functional as TF

        from .images import read_image

        img = read_image(self.paths[i])
        img = TF.center_crop(img, min(img.size))
        img = TF.resize(img, [self.size, self.size], antialias=True)
        return TF.pil_to_tensor(img).float() / 255.0, 0


def check_lsun(cfg: LocalImagesConfig) -> None:
    root = cfg.root
    path = dataset_root(
        root, cfg.name, f"a folder of LSUN {cfg.name.split('_', 1)[1]} images (jpg/png/webp, searched recursively)"
    )
    if (path / "data.mdb").exists():
        raise ConfigError(
            f"dataset.root='{root}' is an LSUN lmdb export, which needs the `lmdb` package; "
            f"export it to image files (LSUN's `python data.py export`) and point dataset.root there"
        )


def _image_paths(root: Path, limit: int) -> list[Path]:
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return paths[:limit] if limit > 0 else paths


def build_lsun(cfg: LocalImagesConfig, calib_cfg) -> DataBundle:
    check_lsun(cfg)
    root = Path(str(cfg.root)).expanduser()
    paths = _image_paths(root, int(cfg.max_images))
    if len(paths) < 2:
        raise ConfigError(
            f"dataset.root='{cfg.root}' holds {len(paths)} images ({'/'.join(IMAGE_SUFFIXES)}); "
            f"FID needs a reference set of at least 2, ideally >= 10,000"
        )
    size = int(cfg.img_size or 256)
    images = ImageFolderUnit(paths, size)
    return DataBundle(
        name=cfg.name,
        num_classes=0,
        in_chans=3,
        img_size=size,
        test=images,
        train=images,
        calib_inputs=torch.empty(0, 3, size, size),
        calib_indices=np.zeros(0, np.int64),
        meta={"num_test": len(paths), "prompt": cfg.prompt or LSUN_PROMPTS.get(cfg.name, "")},
    )


for _name in LSUN_PROMPTS:
    DATASETS.register(_name, config=LocalImagesConfig, check=check_lsun)(build_lsun)


@DATASETS.register("mnist5k_gen", config=EmbeddedSplitConfig)
def build_mnist5k_gen(cfg: EmbeddedSplitConfig, calib_cfg) -> DataBundle:
    x, y = load_mnist5k_arrays()
    train_idx, test_idx = fixed_split(len(x), cfg.num_test, cfg.split_seed)
    xt = torch.from_numpy(x)  # cached arrays are shared: indexing below copies
    return DataBundle(
        name="mnist5k_gen",
        num_classes=10,
        in_chans=1,
        img_size=28,
        test=tensor_split(xt[test_idx], torch.from_numpy(y[test_idx])),
        train=tensor_split(xt[train_idx], torch.from_numpy(y[train_idx])),
        calib_inputs=torch.empty(0, 1, 28, 28),
        calib_indices=np.zeros(0, np.int64),
        meta={
            "num_train": len(train_idx),
            "num_test": len(test_idx),
            "test_indices_digest": indices_digest(test_idx),
            "prompt": "",
        },
    )
