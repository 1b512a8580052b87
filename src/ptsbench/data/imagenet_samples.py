"""A real ImageNet case offline: 20 labelled ImageNet validation images and a disjoint calibration set.

- Evaluation (``dataset.root``; default: the ``data`` folder of the installed ``foolbox`` 3.3.4 package, read
  as files, foolbox is never imported): the 20 images ``imagenet_<ii>_<label>.jpg`` (ImageNet val, 512x512,
  the ImageNet-1k class index in the file name), through the model's eval transform (resize, center crop,
  the weights' mean/std). ``dataset.views`` > 0 adds that many deterministic augmented views of each image
  (random resized crop of scale [0.35, 1] and a horizontal flip, drawn from a generator seeded by image and
  view), so label-free metrics (agreement, KL) average over hundreds of inputs; the record's
  ``data.meta`` says how many inputs are originals and how many views.
- Calibration (``dataset.calib_root``; default: ``skimage/data`` of the installed scikit-image package):
  ``calib.num_samples`` crops of natural photos that are not ImageNet validation images (astronaut, cat,
  coffee, rocket, motorcycle, brick, grass, gravel, ...): for crop i, a photo drawn uniformly, a random
  resized crop of scale [0.08, 1] and aspect [3/4, 4/3] at the model's crop size, flipped with probability
  1/2, all from ``calib.seed``. Disjoint from the evaluation images by construction, unlabelled.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..schemas import knob
from .base import DATASETS, LocalImagesConfig, indices_digest
from .images import EvalPreprocess, ImageBundle, Normalized, Uint8Images, read_image

EVAL_PATTERN = re.compile(r"imagenet_(\d+)_(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
CALIB_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "camera.png",
)


@dataclass(frozen=True)
class ImageNetSamplesConfig(LocalImagesConfig):
    """``dataset=imagenet_samples``: ``root`` / ``calib_root`` null take the installed packages' folders."""

    calib_root: str | None = knob(None)
    views: int = knob(0, ge=0)


def package_folder(package: str, sub: str, knob_name: str, extra: str) -> Path:
    """``<package>/<sub>`` of an installed package, found without importing it; ConfigError naming the knob."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{knob_name} is null, so the images come from the installed '{package}' package, which is not "
            f"installed; `pip install -e '.[{extra}]'` (`make install` does), or point {knob_name} at a folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / sub


def eval_files(cfg: ImageNetSamplesConfig) -> list[tuple[Path, int]]:
    """(image, ImageNet-1k label) of the evaluation images, in file-name order."""
    root = Path(str(cfg.root)).expanduser() if cfg.root else package_folder("foolbox", "data", "dataset.root", "real")
    files = sorted(p for p in root.iterdir() if EVAL_PATTERN.match(p.name)) if root.is_dir() else []
    if not files:
        raise ConfigError(
            f"dataset.root='{root}' holds no imagenet_<index>_<label>.jpg images (foolbox's data folder layout)"
        )
    return [(p, int(EVAL_PATTERN.match(p.name).group(2))) for p in files]  # type: ignore[union-attr]


def calib_files(cfg: ImageNetSamplesConfig) -> list[Path]:
    root = (
        Path(str(cfg.calib_root)).expanduser()
        if cfg.calib_root
        else package_folder("skimage", "data", "dataset.calib_root", "real")
    )
    named = [root / n for n in CALIB_PHOTOS if (root / n).is_file()]
    files = named or sorted(p for p in root.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise ConfigError(f"dataset.calib_root='{root}' holds no .jpg/.png photos to draw calibration crops from")
    return files


def check_config(cfg: ImageNetSamplesConfig) -> None:
    eval_files(cfg)
    calib_files(cfg)


def _crop(img, size: int, scale, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """A random resized crop of ``img`` (PIL) to ``size`` x ``size`` uint8 CHW, drawn from ``generator``."""
    from torchvision.transforms import InterpolationMode, RandomResizedCrop
    from torchvision.transforms import functional as TF

    state = torch.random.get_rng_state()
    torch.random.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    try:  # RandomResizedCrop.get_params draws from torch's global generator: seed it from ours, then restore
        top, left, h, w = RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
    finally:
        torch.random.set_rng_state(state)
    out = TF.resized_crop(img, top, left, h, w, [size, size], InterpolationMode.BICUBIC, antialias=True)
    if flip and bool(torch.rand(1, generator=generator) < 0.5):
        out = TF.hflip(out)
    return TF.pil_to_tensor(out)


def _centered(img, spec: EvalPreprocess) -> torch.Tensor:
    from torchvision import transforms as T

    interp = T.InterpolationMode(spec.interpolation)
    return T.Compose([T.Resize(spec.resize_size, interpolation=interp), T.CenterCrop(spec.crop_size), T.PILToTensor()])(
        img
    )


@DATASETS.register("imagenet_samples", config=ImageNetSamplesConfig, takes_context=True, check=check_config)
def build_imagenet_samples(
    cfg: ImageNetSamplesConfig, calib_cfg, preprocess: EvalPreprocess | None = None, cache_dir=None
) -> ImageBundle:
    spec = (preprocess or EvalPreprocess()).at_crop(cfg.img_size)
    samples = eval_files(cfg)
    images, labels = [], []
    for i, (path, label) in enumerate(samples):
        img = read_image(path, "dataset.root")
        images.append(_centered(img, spec))
        labels.append(label)
        for v in range(int(cfg.views)):
            g = torch.Generator().manual_seed(1_000_003 * i + v)
            images.append(_crop(img, spec.crop_size, (0.35, 1.0), g, flip=True))
            labels.append(label)
    test = Uint8Images(torch.stack(images).numpy(), np.asarray(labels, dtype=np.int64))

    photos = [read_image(p, "dataset.calib_root") for p in calib_files(cfg)]
    n, seed = int(calib_cfg.num_samples), int(calib_cfg.seed)
    if n < 0:
        raise ConfigError(f"calib.num_samples={n} must be >= 0")
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(photos), (n,), generator=g).tolist()
    crops = [_crop(photos[k], spec.crop_size, (0.08, 1.0), g, flip=True) for k in picks]
    calib_u8 = torch.stack(crops) if crops else torch.empty(0, 3, spec.crop_size, spec.crop_size, dtype=torch.uint8)
    normalized = Normalized(test, spec.mean, spec.std)
    calib_idx = np.asarray(picks, dtype=np.int64)
    meta = {
        "num_test": len(labels),
        "num_originals": len(samples),
        "views_per_image": int(cfg.views),
        "calib_photos": len(photos),
        "preprocess": asdict(spec),
        "calib_indices_digest": indices_digest(calib_idx),
    }
    return ImageBundle(
        name="imagenet_samples",
        num_classes=int(cfg.num_classes or 1000),
        in_chans=3,
        img_size=spec.crop_size,
        test=normalized,
        train=normalized,  # no training split: the 20 images are for evaluation only
        calib_inputs=normalized.normalize(calib_u8),
        calib_indices=calib_idx,
        meta=meta,
    )
