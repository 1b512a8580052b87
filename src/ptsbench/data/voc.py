"""``voc07``: PASCAL VOC 2007 detection (Everingham et al. 2010) from a local folder (docs/methods.md#tasks-and-metrics).

Layout: ``dataset.root`` is ``VOCdevkit/VOC2007`` itself, or a folder holding
``VOCdevkit/VOC2007`` or ``VOC2007``, with::

    Annotations/<id>.xml            # one per image: <object><name>, <difficult>, <bndbox>
    JPEGImages/<id>.jpg
    ImageSets/Main/test.txt         # ids of the evaluated split (dataset.split)
    ImageSets/Main/trainval.txt     # ids of the calibration pool (dataset.calib_split)

Labels are the 20 VOC classes in the usual alphabetical order, numbered 1..20. Boxes convert
VOC's 1-based inclusive pixel corners to 0-based ``x1 y1 x2 y2``. Objects marked difficult are
flagged ``iscrowd``, so the evaluation ignores them as VOC's protocol does.
Calibration: ``calib.num_samples`` images of ``calib_split`` drawn with ``calib.seed``, resized
and centre-cropped to ``calib_size`` squares.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import cast

from ..errors import ConfigError
from .base import DATASETS, VocConfig, dataset_root, sample_calibration
from .detection import DetectionBundle, file_detection_bundle, make_target, require

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
LAYOUT = "VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<split>.txt}"


def voc_year_dir(root: Path) -> Path:
    for cand in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (cand / "Annotations").is_dir():
            return cand
    raise ConfigError(f"dataset.root: no VOC2007 Annotations folder under {root}; expected layout: {LAYOUT}")


def parse_voc_xml(path: Path) -> dict:
    """Target of one VOC annotation file."""
    boxes, labels, difficult = [], [], []
    for obj in ET.parse(path).getroot().iter("object"):
        name = obj.findtext("name", "").strip()
        if name not in VOC_CLASSES:
            raise ConfigError(
                f"dataset=voc07: unknown class '{name}' in {path}; valid classes: {', '.join(VOC_CLASSES)}"
            )
        bb = obj.find("bndbox")
        # a VOC object always has a bndbox with its four corners
        x1, y1, x2, y2 = (float(cast(str, cast(ET.Element, bb).findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x1 - 1, y1 - 1, x2, y2))
        labels.append(VOC_CLASSES.index(name) + 1)
        difficult.append(int(obj.findtext("difficult", "0").strip() or 0))
    return make_target(boxes, labels, difficult)


def split_ids(year: Path, split: str, knob: str) -> list[str]:
    f = require(
        year / "ImageSets" / "Main" / f"{split}.txt",
        knob,
        f"the id list of split '{split}'",
        f"expected layout: {LAYOUT}",
    )
    return [line.split()[0] for line in f.read_text().splitlines() if line.strip()]


@DATASETS.register("voc07", config=VocConfig)
def build_voc07(cfg: VocConfig, calib_cfg) -> DetectionBundle:
    year = voc_year_dir(dataset_root(cfg.root, "voc07", LAYOUT))
    split, calib_split = str(cfg.split), str(cfg.calib_split)
    ids = split_ids(year, split, "dataset.split")
    num_test = cfg.num_test
    if num_test is not None:
        ids = ids[: int(num_test)]
    targets = [
        parse_voc_xml(
            require(
                year / "Annotations" / f"{i}.xml", "dataset.root", f"annotation {i}.xml", f"expected layout: {LAYOUT}"
            )
        )
        for i in ids
    ]
    paths = [year / "JPEGImages" / f"{i}.jpg" for i in ids]
    pool = split_ids(year, calib_split, "dataset.calib_split")
    calib_idx = sample_calibration(len(pool), int(calib_cfg.num_samples), int(calib_cfg.seed))
    size = int(cfg.calib_size)
    calib_paths = [year / "JPEGImages" / f"{pool[i]}.jpg" for i in calib_idx]
    return file_detection_bundle(
        "voc07", len(VOC_CLASSES), paths, targets, calib_paths, calib_idx, size, split, calib_split
    )
