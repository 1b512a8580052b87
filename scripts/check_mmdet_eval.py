"""Dense mAP of an mmdet RetinaNet on digits_det: PTSBench's DET task vs mmdet's own test loop + CocoMetric.

Trains ``model=mmdet_retinanet_digits`` briefly with mmdet's own loss (unless --weights names an mmdet
checkpoint), saves it as an mmengine-style checkpoint, then evaluates the same test canvases twice:
- PTSBench: ``model.weights=<ckpt>`` through the DET task (in-memory canvases, the config's test
  pipeline on the uint8 image, pycocotools COCOeval over the "all" area range);
- mmdet: the canvases written as PNG files with a COCO annotation file, read back by mmdet's
  ``CocoDataset`` with the config's test pipeline, ``detector.test_step`` and mmdet's ``CocoMetric``
  (which rounds to 3 decimals).
and prints both mAP@[.5:.95] and mAP@0.5 with their difference (they must agree to 0.001).

    python scripts/check_mmdet_eval.py --epochs 4 --out outputs/mmdet_digits
    python scripts/check_mmdet_eval.py --weights outputs/mmdet_digits/retinanet_r18_digits.pth
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402

from ptsbench.data import build_data  # noqa: E402
from ptsbench.data.digits_det import export_coco  # noqa: E402
from ptsbench.models import build_model  # noqa: E402
from ptsbench.tasks.detection import DetectionTask  # noqa: E402

MODEL = OmegaConf.load(ROOT / "conf" / "model" / "mmdet_retinanet_digits.yaml")


def train(data, epochs: int, lr: float, batch: int, seed: int = 0) -> torch.nn.Module:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(
        OmegaConf.create({**MODEL, "weights": "none"}), data.num_classes, data.in_chans, data.img_size, data.name
    )
    det = model.detector
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    images, targets = data.train.images, data.train.targets
    steps = epochs * (len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    det.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(images), generator=gen)
        for i in range(0, len(images) - batch + 1, batch):
            idx = perm[i : i + batch].tolist()
            prep = model.preprocess([images[j] for j in idx])
            samples: list[DetDataSample] = prep["data_samples"]
            for s, j in zip(samples, idx):
                s.gt_instances = InstanceData(bboxes=targets[j]["boxes"], labels=targets[j]["labels"] - 1)
                s.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
            losses = det.loss(prep["inputs"], samples)
            loss, _ = det.parse_losses(losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(det.parameters(), 10.0)
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f}", flush=True)
    return model.eval()


def mmdet_map(model, data, workdir: Path) -> dict:
    """mmdet's own evaluation of ``model.detector`` on the test canvases written to disk."""
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from mmengine.dataset import pseudo_collate

    from ptsbench.models.detection_mmdet import load_config

    ann = export_coco(data.test, data.num_classes, workdir)
    cats = json.loads(ann.read_text())["categories"]
    ds = CocoDataset(
        ann_file=str(ann),
        data_prefix={"img": str(workdir) + "/"},
        test_mode=True,
        metainfo={"classes": tuple(c["name"] for c in cats)},
        pipeline=list(load_config(str(MODEL.config)).test_pipeline),
    )
    metric = CocoMetric(ann_file=str(ann), metric="bbox")
    metric.dataset_meta = ds.metainfo
    with torch.no_grad():
        for i in range(0, len(ds), 50):
            batch = pseudo_collate([ds[j] for j in range(i, min(i + 50, len(ds)))])
            metric.process(batch, [s.to_dict() for s in model.detector.test_step(batch)])
    return metric.compute_metrics(metric.results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, help="an mmdet checkpoint to evaluate (skips training)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "mmdet_digits")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = build_data(
        OmegaConf.load(ROOT / "conf" / "dataset" / "digits_det.yaml"), OmegaConf.create({"num_samples": 64, "seed": 0})
    )
    weights = args.weights
    if weights is None:
        t0 = time.time()
        model = train(data, args.epochs, args.lr, args.batch)
        args.out.mkdir(parents=True, exist_ok=True)
        weights = args.out / "retinanet_r18_digits.pth"
        torch.save({"meta": {"epochs": args.epochs, "lr": args.lr}, "state_dict": model.detector.state_dict()}, weights)
        print(f"trained in {time.time() - t0:.0f} s -> {weights}")
    model = build_model(
        OmegaConf.create({**MODEL, "weights": str(weights)}), data.num_classes, data.in_chans, data.img_size, data.name
    )
    ours = DetectionTask(batch_size=100).evaluate(model, data, torch.device("cpu"))
    theirs = mmdet_map(model, data, args.out / "coco")
    print(f"PTSBench DET task: mAP {ours['map']:.4f}  mAP50 {ours['map50']:.4f}  ({len(data.test)} canvases)")
    print(f"mmdet CocoMetric:  mAP {theirs['bbox_mAP']:.3f}   mAP50 {theirs['bbox_mAP_50']:.3f}")
    print(
        f"|difference|:      mAP {abs(ours['map'] - theirs['bbox_mAP']):.4f}  "
        f"mAP50 {abs(ours['map50'] - theirs['bbox_mAP_50']):.4f}"
    )


if __name__ == "__main__":
    main()
