"""ImageNet-1K from a local ImageFolder (docs/methods.md#tasks-and-metrics); nothing is downloaded.

Layout: ``<root>/train/<class>/*.JPEG`` and ``<root>/val/<class>/*.JPEG``.
- Test split: ``val``, preprocessed with the model's eval transform: resize, center crop and
  normalisation of the weights in use, which the pipeline passes down as ``preprocess``
  (``models.library.eval_preprocess``: torchvision's ``Weights.transforms()``, timm's
  ``resolve_data_config``; the torchvision default without one); ``dataset.img_size`` forces
  another crop size (the resize keeps its ratio to the crop).
- Labels: class folders named by WordNet ids (n01440764, ...) take their standard ImageNet-1K
  index, so a subset of the classes keeps the labels the pretrained head predicts; other folder
  names take their sorted position among the train/ classes, and val/ uses that same map (a val/
  class that train/ lacks is an error).
- Calibration: ``calib.num_samples`` training images drawn with ``calib.seed``, preprocessed like
  the test split, unlabelled.
- ``dataset.eval_cache: true`` decodes the val split once into a uint8 cache under
  ``paths.cache_dir`` (see ``data.images``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..errors import ConfigError
from .base import DATASETS, LocalImagesConfig, dataset_root, indices_digest, sample_calibration
from .images import (
    EvalPreprocess,
    ImageBundle,
    ImageFiles,
    Normalized,
    Uint8Images,
    cached_uint8,
    files_digest,
    stack_uint8,
)

LAYOUT = (
    "<root>/train/<class>/<image>.JPEG and <root>/val/<class>/<image>.JPEG (ImageFolder; the "
    "official val images must first be sorted into class folders, e.g. with the usual valprep.sh)"
)


def check_config(cfg: LocalImagesConfig) -> None:
    root = dataset_root(cfg.root, "imagenet", LAYOUT)
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise ConfigError(f"dataset.root='{root}' has no {split}/ folder of class subfolders; expected {LAYOUT}")


def class_to_index(classes: list[str], num_classes: int) -> dict[str, int]:
    from timm.data import ImageNetInfo

    standard = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
    if num_classes == len(standard) and all(c in standard for c in classes):
        return {c: standard[c] for c in classes}
    if len(classes) > num_classes:
        raise ConfigError(
            f"dataset.root holds {len(classes)} class folders but dataset.num_classes={num_classes}; "
            f"set dataset.num_classes to the model's number of outputs"
        )
    return {c: i for i, c in enumerate(sorted(classes))}


def image_samples(folder: Path, num_classes: int, index: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """(path, label) of every image under ``folder``; ``index``: the class map to use (the train
    split's, so that a val/ with a subset of the classes keeps the same labels)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    classes, _ = find_classes(str(folder))
    if index is None:
        index = class_to_index(classes, num_classes)
    unknown = sorted(set(classes) - set(index))
    if unknown:
        raise ConfigError(
            f"dataset.root: {folder} has class folder(s) {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''} that train/ does not have, so they have no label; "
            f"every val/ class must also be a train/ class ({LAYOUT})"
        )
    try:
        return make_dataset(str(folder), {c: index[c] for c in classes}, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as e:
        raise ConfigError(f"dataset.root: {e} (under {folder}); expected {LAYOUT}") from None


def train_class_index(root: Path, num_classes: int) -> dict[str, int]:
    from torchvision.datasets.folder import find_classes

    return class_to_index(find_classes(str(root / "train"))[0], num_classes)


# takes_context: receives the model's eval transform (preprocess) and cache_dir
@DATASETS.register("imagenet", config=LocalImagesConfig, takes_context=True, check=check_config)
def build_imagenet(
    cfg: LocalImagesConfig, calib_cfg, preprocess: EvalPreprocess | None = None, cache_dir=None
) -> ImageBundle:
    check_config(cfg)
    spec = (preprocess or EvalPreprocess()).at_crop(cfg.img_size)
    root = Path(str(cfg.root)).expanduser().resolve()
    num_classes = int(cfg.num_classes or 1000)
    workers = int(cfg.num_workers)
    index = train_class_index(root, num_classes)  # val/ is labelled with train/'s map, never its own
    train_samples = image_samples(root / "train", num_classes, index)
    val_samples = image_samples(root / "val", num_classes, index)
    val_files = ImageFiles(val_samples, spec)
    meta = {"num_train": len(train_samples), "num_test": len(val_samples), "preprocess": asdict(spec)}
    test_source: ImageFiles | Uint8Images = val_files
    loader_workers = workers
    if cfg.eval_cache:
        if not cache_dir:
            raise ConfigError("dataset.eval_cache=true needs paths.cache_dir to write the decoded val split to")
        key = files_digest(val_samples, root, {"split": "val", "preprocess": asdict(spec)})
        cache_file = Path(str(cache_dir)) / "eval" / f"imagenet-val-{key}.npy"
        test_source, loader_workers = cached_uint8(val_files, cache_file, workers), 0  # no decoding left to do
        meta["eval_cache"] = str(cache_file)
    train = Normalized(ImageFiles(train_samples, spec), spec.mean, spec.std)
    calib_idx = sample_calibration(len(train_samples), int(calib_cfg.num_samples), int(calib_cfg.seed))
    calib = train.normalize(stack_uint8(train.source, calib_idx, workers))
    meta["calib_indices_digest"] = indices_digest(calib_idx)
    return ImageBundle(
        name="imagenet",
        num_classes=num_classes,
        in_chans=3,
        img_size=spec.crop_size,
        test=Normalized(test_source, spec.mean, spec.std),
        train=train,
        calib_inputs=calib,
        calib_indices=calib_idx,
        meta=meta,
        loader_workers=loader_workers,
    )
