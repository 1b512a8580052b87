"""Content digest of the files a run reads from a local dataset, so results follow the data.

A dense score cached under the config alone outlives a changed ``val/`` (replace one image, re-run:
the old top-1 comes back). :func:`dataset_digest` names the data by content: SHA-256 over one line
per file the run reads, ``<role>\\t<path relative to dataset.root>\\t<label>\\t<sha256 of the bytes>``,
in the order the loader reads them:
- ``test``: the evaluated split: ImageNet ``val/`` images with the label train/'s class map gives
  them; CIFAR's test batch file(s); COCO's annotation file and the images of the first
  ``num_test`` ids; VOC's split list, annotation and image files; the LSUN/generation reference
  images (sorted, at most ``max_images``); any other ``dataset.root``: every file under it;
- ``calib`` (only with ``calib=(num_samples, seed)``): the calibration images drawn by the same
  ``sample_calibration`` the builder uses (CIFAR: its train batch files).
Without ``calib`` the digest covers what a dense score depends on (the dense-cache key); with it,
everything the run reads (the run digest). Embedded datasets (no ``dataset.root``) give None.

File hashes are remembered under ``<cache_dir>/file_sha256/`` per dataset root with an
unforgeable key (inode and change time: :mod:`ptsbench.file_hashes`), so ImageNet's val split is
hashed once and a file copied in with an old mtime is still seen. The digest itself depends only
on names, labels and bytes: the same data gives the same digest on every machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..file_hashes import HashIndex
from .base import sample_calibration

Entry = tuple[str, Path, str]  # role, file, label ("" when the file has none)


def _calib_pick(pool: list, calib: tuple[int, int] | None) -> list:
    if calib is None:
        return []
    return [pool[i] for i in sample_calibration(len(pool), int(calib[0]), int(calib[1]))]


def _imagenet(ds: Mapping, root: Path, calib) -> list[Entry]:
    from .imagenet import image_samples, train_class_index

    num_classes = int(ds.get("num_classes", 1000))
    index = train_class_index(root, num_classes)
    out = [("test", Path(p), str(y)) for p, y in image_samples(root / "val", num_classes, index)]
    if calib is not None:
        train = image_samples(root / "train", num_classes, index)
        out += [("calib", Path(p), "") for p, _ in _calib_pick(train, calib)]
    return out


def _cifar(ds: Mapping, root: Path, calib) -> list[Entry]:
    from .cifar import LAYOUTS, batches_dir

    folder = batches_dir(str(ds["name"]), root)
    _, train, test, _, _ = LAYOUTS[str(ds["name"])]
    return [("test", folder / f, "") for f in test] + [("calib", folder / f, "") for f in train if calib is not None]


def _coco(ds: Mapping, root: Path, calib) -> list[Entry]:
    split, calib_split = str(ds.get("split", "val2017")), str(ds.get("calib_split", "train2017"))
    ann = root / "annotations" / f"instances_{split}.json"
    images = sorted(json.loads(ann.read_text())["images"], key=lambda im: im["id"])
    if ds.get("num_test") is not None:
        images = images[: int(ds["num_test"])]
    out = [("test", ann, "")] + [("test", root / split / im["file_name"], "") for im in images]
    if calib is not None:
        pool = sorted(p for p in (root / calib_split).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        out += [("calib", p, "") for p in _calib_pick(pool, calib)]
    return out


def _voc(ds: Mapping, root: Path, calib) -> list[Entry]:
    from .voc import split_ids, voc_year_dir

    year = voc_year_dir(root)
    split, calib_split = str(ds.get("split", "test")), str(ds.get("calib_split", "trainval"))
    ids = split_ids(year, split, "dataset.split")
    if ds.get("num_test") is not None:
        ids = ids[: int(ds["num_test"])]
    out: list[Entry] = [("test", year / "ImageSets" / "Main" / f"{split}.txt", "")]
    for i in ids:
        out += [("test", year / "Annotations" / f"{i}.xml", ""), ("test", year / "JPEGImages" / f"{i}.jpg", "")]
    if calib is not None:
        pool = split_ids(year, calib_split, "dataset.calib_split")
        out += [("calib", year / "JPEGImages" / f"{i}.jpg", "") for i in _calib_pick(pool, calib)]
    return out


def _image_folder(ds: Mapping, root: Path, calib) -> list[Entry]:
    from .generation import _image_paths

    return [("test", p, "") for p in _image_paths(root, int(ds.get("max_images", 10000)))]


def _every_file(ds: Mapping, root: Path, calib) -> list[Entry]:
    return [("test", p, "") for p in sorted(p for p in root.rglob("*") if p.is_file())]


def _imagenet_samples(ds: Mapping, root: Path, calib) -> list[Entry]:
    from types import SimpleNamespace

    from .imagenet_samples import calib_files, eval_files

    cfg = SimpleNamespace(root=str(root), calib_root=ds.get("calib_root"))
    out: list[Entry] = [("test", p, str(y)) for p, y in eval_files(cfg)]  # type: ignore[arg-type]
    if calib is not None:  # every crop is drawn from any of the photos: all of them are read
        out += [("calib", p, "") for p in calib_files(cfg)]  # type: ignore[arg-type]
    return out


def packaged_root(dataset: Mapping[str, Any]) -> Path | None:
    """The folder a dataset reads when ``dataset.root`` is null because an installed package ships its
    files (imagenet_samples: foolbox's data/), so its digest follows those files too; None otherwise."""
    if str(dataset.get("name")) != "imagenet_samples":
        return None
    from ..errors import ConfigError
    from .imagenet_samples import package_folder

    try:
        return package_folder("foolbox", "data", "dataset.root", "real")
    except ConfigError:
        return None


LISTERS = {
    "imagenet_samples": _imagenet_samples,
    "imagenet": _imagenet,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "coco2017": _coco,
    "voc07": _voc,
    "lsun_churches": _image_folder,
    "lsun_bedroom": _image_folder,
}


def dataset_files(dataset: Mapping[str, Any], calib: tuple[int, int] | None = None) -> list[Entry] | None:
    """(role, file, label) of every file a run on ``dataset`` (its resolved knobs: ``name``,
    ``root``, ...) reads, in reading order; None for a dataset without ``root``."""
    if dataset.get("root") in (None, "", "???"):
        return None
    root = Path(str(dataset["root"])).expanduser().resolve()
    return LISTERS.get(str(dataset.get("name")), _every_file)(dataset, root, calib)


def dataset_digest(
    dataset: Mapping[str, Any], calib: tuple[int, int] | None = None, cache_dir: str | Path | None = None
) -> str | None:
    """SHA-256 (hex) of the names, labels and contents of the files :func:`dataset_files` lists;
    ``calib``: (calib.num_samples, calib.seed), or None for the evaluated split only."""
    entries = dataset_files(dataset, calib)
    if entries is None:
        return None
    root = Path(str(dataset["root"])).expanduser().resolve()
    index_name = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    index = HashIndex(Path(str(cache_dir)) / "file_sha256" / f"{index_name}.json" if cache_dir else None)
    total = hashlib.sha256()
    for role, path, label in entries:
        # machine-free: relative to root, or (a second folder, e.g. calibration photos) its last two parts
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.parent.name, path.name)
        total.update(f"{role}\t{rel.as_posix()}\t{label}\t{index.sha256(path)}\n".encode())
    index.save()
    return total.hexdigest()
