"""Detection data: a bundle whose test split yields ``(image, target)`` pairs (docs/methods.md#tasks-and-metrics).

``target`` is torchvision's detection dict: ``boxes`` (float ``[N, 4]``, absolute ``x1 y1 x2 y2``
pixels), ``labels`` (int64 ``[N]``, foreground classes numbered from 1; 0 is SSD's background and
unused by RetinaNet) and ``iscrowd`` (int64 ``[N]``: COCO crowd regions and VOC "difficult"
objects, which the mAP evaluation ignores instead of counting as misses).
Images of one split may differ in size, so loaders batch them as lists. The calibration inputs
stay one fixed-size tensor of unlabelled images, as for every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError
from .base import DataBundle, indices_digest


def collate_detection(batch):
    """A batch of (image, target) pairs as (list of images, list of targets)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


@dataclass
class DetectionBundle(DataBundle):
    """``num_classes`` is the largest foreground label (COCO: 90 category ids, VOC: 20)."""

    def test_loader(self, batch_size: int, num_workers: int = 0) -> DataLoader:
        return DataLoader(
            self.test, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_detection
        )


def make_target(boxes, labels, iscrowd=None) -> dict[str, torch.Tensor]:
    boxes_t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels_t = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    crowd = torch.zeros_like(labels_t) if iscrowd is None else torch.as_tensor(iscrowd, dtype=torch.int64)
    return {"boxes": boxes_t, "labels": labels_t, "iscrowd": crowd}


def read_rgb(path: Path) -> torch.Tensor:
    """A JPEG/PNG file as a float (3, H, W) tensor in [0, 1] (grey images are expanded)."""
    import numpy as np

    from .images import read_image

    pixels = np.asarray(read_image(path))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0)


def square_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and centre-crop a ``size`` x ``size`` square, so
    calibration images of any shape stack into one tensor without distorting them."""
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    out = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[:, top : top + size, left : left + size].contiguous()


class FileDetectionDataset(Dataset):
    """Images read lazily from disk, each with its prebuilt target."""

    def __init__(self, paths: list[Path], targets: list[dict[str, torch.Tensor]]):
        self.paths, self.targets = paths, targets

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return read_rgb(self.paths[i]), self.targets[i]


def calibration_images(paths: list[Path], size: int) -> torch.Tensor:
    return torch.stack([square_resize(read_rgb(p), size) for p in paths]) if paths else torch.empty(0, 3, size, size)


def require(path: Path, knob: str, what: str, hint: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{knob}: {what} not found at {path}; {hint}")
    return path


def file_detection_bundle(
    name: str,
    num_classes: int,
    paths: list[Path],
    targets: list[dict],
    calib_paths: list[Path],
    calib_idx: np.ndarray,
    size: int,
    split: str,
    calib_split: str,
) -> DetectionBundle:
    """The bundle of a detection set read from files (COCO, VOC): test images with their targets,
    calibration images resized to ``size``, and the meta every record keeps (splits, test size,
    calibration indices' digest)."""

    return DetectionBundle(
        name=name,
        num_classes=num_classes,
        in_chans=3,
        img_size=size,
        test=FileDetectionDataset(paths, targets),
        train=FileDetectionDataset([], []),
        calib_inputs=calibration_images(calib_paths, size),
        calib_indices=calib_idx,
        meta={
            "split": split,
            "calib_split": calib_split,
            "num_test": len(paths),
            "calib_indices_digest": indices_digest(calib_idx),
        },
    )
