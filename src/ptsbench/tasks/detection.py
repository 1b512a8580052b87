"""Detection task (docs/methods.md#tasks-and-metrics): mean average precision by the official COCO evaluation
(pycocotools' COCOeval, the backend of torchmetrics' MeanAveragePrecision).

- ``map``: COCO mAP@[.5:.95], the mean over IoU thresholds 0.50, 0.55, ..., 0.95 and over the
  classes present in the ground truth of the area under the 101-point interpolated
  precision/recall curve (at most 100 detections per image);
- ``map50`` / ``map75``: the same at the single IoU threshold 0.5 / 0.75. ``map50`` is the
  VOC07-style mAP@0.5 (with COCO's 101-point interpolation instead of VOC07's 11 points).
Ground-truth objects flagged ``iscrowd`` (COCO crowds, VOC "difficult") are ignored: matching
them neither earns nor costs anything. The primary metric is ``task.metric`` (conf/task/det.yaml:
the dataset's ``metric``, ``map`` for COCO, ``map50`` for VOC07 and digits_det).

``forward_for_calibration`` runs the detector up to its raw head outputs (no anchor decoding,
no NMS) and returns one tensor ``[N, anchors, classes + 4]`` for allocators and reconstruction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import TASKS, Task, TaskConfig

# Detection batches are capped by input pixels (COCO images are ~800x1333, digits 64x64).
MAX_BATCH_PIXELS = 16 * 800 * 1333


def mean_average_precision(preds: list[dict], targets: list[dict]) -> dict[str, float]:
    """COCO-style box mAP of ``preds`` (boxes, scores, labels) against ``targets`` (boxes,
    labels, optional iscrowd), all boxes absolute x1 y1 x2 y2."""
    metric = MeanAP()
    metric.update(preds, targets)
    return metric.compute()


def _xywh(box: list[float]) -> list[float]:
    return [box[0], box[1], box[2] - box[0], box[3] - box[1]]


class MeanAP:
    """Accumulates predictions batch by batch; ``compute`` runs pycocotools' COCOeval as
    torchmetrics' MeanAveragePrecision (pycocotools backend) does, with the same numbers (a test
    checks), but over the ``all`` area range only: small/medium/large would quadruple the
    per-image work of an evaluation repeated for every sparse model, and no track reads them.
    Calling pycocotools directly also spares each sweep process torchmetrics' import (~3 s)."""

    def __init__(self):
        self.images: list[dict] = []
        self.gts: list[dict] = []
        self.dets: list[dict] = []

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        for p, t in zip(preds, targets):
            image_id = len(self.images) + 1
            self.images.append({"id": image_id})
            crowd = t.get("iscrowd", torch.zeros(len(t["labels"]), dtype=torch.int64))
            for box, label, c in zip(t["boxes"].tolist(), t["labels"].tolist(), crowd.tolist()):
                xywh = _xywh(box)
                self.gts.append(
                    {
                        "id": len(self.gts) + 1,
                        "image_id": image_id,
                        "bbox": xywh,
                        "category_id": label,
                        "area": xywh[2] * xywh[3],
                        "iscrowd": int(c),
                    }
                )
            for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
                xywh = _xywh(box)
                self.dets.append(
                    {
                        "id": len(self.dets) + 1,
                        "image_id": image_id,
                        "bbox": xywh,
                        "score": score,
                        "category_id": label,
                        "area": xywh[2] * xywh[3],
                    }
                )

    def compute(self) -> dict[str, float]:
        import contextlib
        import io

        import numpy as np
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        cats = [{"id": c} for c in sorted({a["category_id"] for a in self.gts + self.dets})]
        gt, dt = COCO(), COCO()
        gt.dataset = {"images": self.images, "annotations": self.gts, "categories": cats}
        dt.dataset = {"images": self.images, "annotations": self.dets, "categories": cats}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            gt.createIndex()
            dt.createIndex()
            ev = COCOeval(gt, dt, "bbox")
            ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
            ev.evaluate()
            ev.accumulate()
        # precision[T, R, K, A, M]: IoU thresholds .5:.05:.95, 101 recall points, classes, areas,
        # max detections (1, 10, 100); recall[T, K, A, M]
        prec, rec = ev.eval["precision"][..., 0, -1], ev.eval["recall"][..., 0, -1]

        def mean(x):  # -1 marks classes without countable ground truth, as in COCOeval.summarize
            x = x[x > -1]
            return float(np.mean(x)) if x.size else -1.0

        return {"map": mean(prec), "map50": mean(prec[0]), "map75": mean(prec[5]), "mar_100": mean(rec)}


def _check_detection_data(data) -> None:
    from ..data.detection import DetectionBundle

    if not isinstance(data, DetectionBundle):
        raise ConfigError(
            f"task=det needs a detection dataset, got dataset={data.name}; "
            f"use dataset=digits_det, dataset=coco2017 or dataset=voc07"
        )


def _input_pixels(model: Any, data) -> int:  # a torchvision detector or MMDetDetector
    """Pixels of one image as the detector sees it (after its own resize)."""
    if getattr(model, "input_pixels", None):  # a wrapped detector (mmdet) that states its own
        return int(model.input_pixels)
    t = getattr(model, "transform", None)
    if t is not None and getattr(t, "fixed_size", None):
        return int(t.fixed_size[0] * t.fixed_size[1])
    if t is not None:
        return int(max(t.min_size) * t.max_size)
    return int(data.img_size) ** 2


@TASKS.register("det", config=TaskConfig, label="DET", order=1)
class DetectionTask(Task):
    @torch.no_grad()
    def evaluate(self, model: nn.Module, data, device) -> dict[str, float]:
        _check_detection_data(data)
        model.eval()
        batch = max(1, min(self.batch_size, MAX_BATCH_PIXELS // _input_pixels(model, data)))
        metric = MeanAP()
        for images, targets in self.limited(data.test_loader(batch)):
            preds = model([img.to(device, non_blocking=True) for img in images])
            metric.update(preds, targets)
        return metric.compute()

    def forward_for_calibration(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Raw head outputs: classification logits and box deltas of every anchor, concatenated."""
        detector: Any = model  # a torchvision detector or MMDetDetector: their parts are read by name
        if hasattr(detector, "raw_head_outputs"):  # a wrapped detector (mmdet) runs its own preprocessing
            return detector.raw_head_outputs(x)
        images, _ = detector.transform(list(x))
        features = detector.backbone(images.tensors)
        features = list(features.values()) if isinstance(features, dict) else [features]
        out = detector.head(features)
        return torch.cat([out["cls_logits"], out["bbox_regression"]], dim=-1)
