"""``digits_det``: the embedded detection set (docs/methods.md#tasks-and-metrics), real MNIST digits pasted on canvases.

Each ``canvas`` x ``canvas`` grey image holds 1 to ``max_digits`` MNIST-5k digits, each resized
to a random side in ``digit_size`` and pasted (pixel-wise max) at a random place where its patch
overlaps no earlier one by more than 10% IoU. A digit's box is the tight box of its ink (pixels
above 0.25 after resizing), its label the digit + 1 (0 is the background class).
Training canvases draw digits only from MNIST-5k's fixed training split and test canvases only
from its test split (the same 4,000/1,000 split as ``mnist5k``), so no test digit is ever seen in
training. Everything follows from ``seed``; calibration canvases are ``calib.num_samples``
training canvases drawn with ``calib.seed``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import DATASETS, DigitsDetConfig, indices_digest, sample_calibration
from .detection import DetectionBundle, make_target
from .embedded import MNIST_MEAN, MNIST_STD, fixed_split, load_mnist5k_arrays

INK = 0.25


class CanvasDataset(Dataset):
    def __init__(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def make_canvases(
    digits: np.ndarray, labels: np.ndarray, n: int, canvas: int, max_digits: int, size_range: tuple[int, int], seed: int
):
    """``n`` canvases (float32 [n, 1, canvas, canvas] in [0, 1]) and their targets."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, canvas, canvas), dtype=np.float32)
    sizes = list(range(size_range[0], size_range[1] + 1))
    resized = {}  # side -> all pool digits at that side, computed once
    targets = []
    for i in range(n):
        boxes, classes = [], []
        patches: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, max_digits + 1))):
            k = int(rng.integers(len(digits)))
            side = int(sizes[rng.integers(len(sizes))])
            for _try in range(20):
                x0, y0 = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
                patch_box = (x0, y0, x0 + side, y0 + side)
                if all(_iou(patch_box, p) <= 0.1 for p in patches):
                    break
            else:
                continue  # no free place left on this canvas
            if side not in resized:
                resized[side] = (
                    F.interpolate(torch.from_numpy(digits), size=(side, side), mode="bilinear", align_corners=False)
                    .clamp_(0, 1)
                    .numpy()
                )
            digit = resized[side][k, 0]
            region = images[i, 0, y0 : y0 + side, x0 : x0 + side]
            np.maximum(region, digit, out=region)
            ys, xs = np.nonzero(digit > INK)
            boxes.append((x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1))
            classes.append(int(labels[k]) + 1)
            patches.append(patch_box)
        targets.append(make_target(boxes, classes))
    return images, targets


@functools.lru_cache(maxsize=4)
def digits_det_arrays(
    canvas: int, max_digits: int, size_range: tuple[int, int], num_train: int, num_test: int, seed: int
):
    x, y = load_mnist5k_arrays()
    train_idx, test_idx = fixed_split(len(x), 1000, 0)  # mnist5k's split: test digits stay unseen
    train = make_canvases(x[train_idx], y[train_idx], num_train, canvas, max_digits, size_range, seed)
    test = make_canvases(x[test_idx], y[test_idx], num_test, canvas, max_digits, size_range, seed + 1)
    return train, test


@DATASETS.register("digits_det", config=DigitsDetConfig)
def build_digits_det(cfg: DigitsDetConfig, calib_cfg) -> DetectionBundle:
    canvas = cfg.canvas
    size_range = tuple(int(v) for v in cfg.digit_size)
    (xtr, ttr), (xte, tte) = digits_det_arrays(
        canvas, cfg.max_digits, size_range, cfg.num_train, cfg.num_test, cfg.seed
    )
    calib_idx = sample_calibration(len(xtr), int(calib_cfg.num_samples), int(calib_cfg.seed))
    # canvases stay in [0, 1]: torchvision detectors normalise inside their own transform
    train = torch.from_numpy(xtr)
    return DetectionBundle(
        name="digits_det",
        num_classes=10,
        in_chans=1,
        img_size=canvas,
        test=CanvasDataset(torch.from_numpy(xte), tte),
        train=CanvasDataset(train, ttr),
        calib_inputs=train[calib_idx].contiguous(),
        calib_indices=calib_idx,
        meta={
            "num_train": len(xtr),
            "num_test": len(xte),
            "mean": MNIST_MEAN,
            "std": MNIST_STD,
            "calib_indices_digest": indices_digest(calib_idx),
        },
    )


def export_coco(dataset, num_classes: int, folder, ann_name: str = "instances_test.json"):
    """Write ``dataset``'s (image, target) pairs as PNG files (uint8, as the mmdet wrapper quantises
    its inputs) and one COCO annotation file into ``folder``, for tools that read COCO from disk
    (mmdet's own test loop and CocoMetric). Category ids are the labels 1..``num_classes`` (0 is the
    background), named after the digit (label - 1). Returns the annotation file's path."""
    import json
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    anns: list[dict] = []
    for i in range(len(dataset)):
        img, target = dataset[i]
        Image.fromarray(img.mul(255).round().clamp(0, 255).to(torch.uint8)[0].numpy()).save(folder / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": img.shape[-1], "height": img.shape[-2]})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": label,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": c, "name": str(c - 1)} for c in range(1, num_classes + 1)]
    ann = folder / ann_name
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann
