"""``coco2017``: MSCOCO-2017 detection (Lin et al. 2014) from a local folder (docs/methods.md#tasks-and-metrics).

Layout under ``dataset.root`` (the official archives unpacked side by side)::

    annotations/instances_val2017.json   # boxes of the evaluated split (dataset.split)
    val2017/*.jpg                        # its images
    train2017/*.jpg                      # calibration images (dataset.calib_split), unlabelled

Targets keep COCO's category ids (1..90) as labels and its ``iscrowd`` flags; boxes ``x y w h``
become ``x1 y1 x2 y2``, and degenerate ones (w or h <= 0) are dropped. Images without any
annotation stay in the test set, where their detections count as false positives, as in the
official evaluation. ``dataset.num_test`` keeps the first N images by id (null: all).
Calibration: ``calib.num_samples`` images of ``calib_split`` drawn with ``calib.seed``, resized
(shorter side) and centre-cropped to ``calib_size`` squares.
"""

from __future__ import annotations

import json
from collections import defaultdict

from .base import DATASETS, CocoConfig, dataset_root, sample_calibration
from .detection import DetectionBundle, file_detection_bundle, make_target, require

LAYOUT = "ROOT/annotations/instances_<split>.json, ROOT/<split>/*.jpg, ROOT/<calib_split>/*.jpg"


def coco_targets(instances: dict) -> tuple[list[dict], list[dict], int]:
    """(images sorted by id, one target per image, largest category id) from an instances json."""
    per_image = defaultdict(list)
    for a in instances.get("annotations", []):
        per_image[a["image_id"]].append(a)
    images = sorted(instances["images"], key=lambda im: im["id"])
    targets = []
    for im in images:
        boxes, labels, crowd = [], [], []
        for a in per_image[im["id"]]:
            x, y, w, h = a["bbox"]
            if w > 0 and h > 0:
                boxes.append((x, y, x + w, y + h))
                labels.append(a["category_id"])
                crowd.append(int(a.get("iscrowd", 0)))
        targets.append(make_target(boxes, labels, crowd))
    num_classes = max((c["id"] for c in instances.get("categories", [])), default=90)
    return images, targets, num_classes


@DATASETS.register("coco2017", config=CocoConfig)
def build_coco2017(cfg: CocoConfig, calib_cfg) -> DetectionBundle:
    root = dataset_root(cfg.root, "coco2017", LAYOUT)
    split, calib_split = str(cfg.split), str(cfg.calib_split)
    ann = require(
        root / "annotations" / f"instances_{split}.json",
        "dataset.split",
        f"the annotations of split '{split}'",
        f"expected layout: {LAYOUT}",
    )
    img_dir = require(
        root / split, "dataset.split", f"the image folder of split '{split}'", f"expected layout: {LAYOUT}"
    )
    calib_dir = require(
        root / calib_split,
        "dataset.calib_split",
        f"the calibration image folder '{calib_split}'",
        f"unpack train2017 there or pass dataset.calib_split=val2017 (expected layout: {LAYOUT})",
    )
    images, targets, num_classes = coco_targets(json.loads(ann.read_text()))
    num_test = cfg.num_test
    if num_test is not None:
        images, targets = images[: int(num_test)], targets[: int(num_test)]
    paths = [img_dir / im["file_name"] for im in images]
    calib_pool = sorted(p for p in calib_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    calib_idx = sample_calibration(len(calib_pool), int(calib_cfg.num_samples), int(calib_cfg.seed))
    size = int(cfg.calib_size)
    return file_detection_bundle(
        "coco2017", num_classes, paths, targets, [calib_pool[i] for i in calib_idx], calib_idx, size, split, calib_split
    )
