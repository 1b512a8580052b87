"""Detection task: detectors build offline and run dense and masked, the adapters cover
every prunable layer in execution order, mAP equals hand-computed values, COCO/VOC loaders read
miniature datasets in the real layouts, and the pipeline writes well-formed det records."""

from __future__ import annotations

import collections
import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.data import build_data
from ptsbench.data.digits_det import make_canvases
from ptsbench.errors import ConfigError
from ptsbench.models import build_model, zoo_checkpoint_path
from ptsbench.models.adapters import get_adapter
from ptsbench.records import validate_record
from ptsbench.run import run
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.sparsity.selection import apply_masks, magnitude_masks
from ptsbench.tasks import EvalConfig, TaskConfig
from ptsbench.tasks.detection import DetectionTask, mean_average_precision

CALIB = {"num_samples": 4, "seed": 0}

TASK = DetectionTask(TaskConfig(name="det", metric="map"), EvalConfig(batch_size=8))

# arch, family, in_chans, small-input knobs
DETECTORS = [
    ("retinanet_resnet18_fpn", "retinanet", 3, {"min_size": 64, "max_size": 64}),
    ("retinanet_resnet50_fpn", "retinanet", 3, {"min_size": 64, "max_size": 64}),
    ("ssd300_mobilenet_v1", "ssd", 3, {"image_size": 96}),
    ("ssdlite300_mobilenet_v2", "ssd", 3, {"image_size": 96}),
    ("small_retinanet_resnet8", "retinanet", 1, {}),
    ("small_ssdlite_mobilenetv2", "ssd", 1, {}),
    ("mb1_ssd", "ssd", 3, {}),  # the qfgaohao/pytorch-ssd ports (fixed 300x300 input)
    ("mb2_ssd_lite", "ssd", 3, {}),
]


def _detector(arch, in_chans, knobs, num_classes=10):
    cfg = OmegaConf.create({"arch": arch, "source": "torchvision_det", "weights": "none", **knobs})
    return build_model(cfg, num_classes, in_chans, 64, "none")


def _unit_order(model, units, x) -> list[str]:
    """Names of the units in the order their first module first runs."""
    seen, hooks = [], []
    for u in units:
        hooks.append(
            model.get_submodule(u.modules[0]).register_forward_pre_hook(
                lambda _m, _a, name=u.name: None if name in seen else seen.append(name)
            )
        )
    with torch.no_grad():
        TASK.forward_for_calibration(model, x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("arch,family,in_chans,knobs", DETECTORS, ids=[d[0] for d in DETECTORS])
def test_detector_builds_offline_runs_dense_and_masked(arch, family, in_chans, knobs):
    torch.manual_seed(0)
    model = _detector(arch, in_chans, knobs)
    images = [torch.rand(in_chans, 64, 64), torch.rand(in_chans, 72, 64)]
    with torch.no_grad():
        dense = model(images)
    assert len(dense) == 2 and set(dense[0]) == {"boxes", "scores", "labels"}

    fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # every BN folded
    modules = prunable_modules(model)
    masks = magnitude_masks(modules, {n: 0.7 for n in modules})
    apply_masks(modules, masks)
    for name, m in modules.items():
        assert int((m.weight == 0).sum()) >= math.floor(0.7 * m.weight.numel() + 1e-9), name
    with torch.no_grad():
        sparse = model(images)
        raw = TASK.forward_for_calibration(model, torch.rand(2, in_chans, 64, 64))
    assert sparse[0]["boxes"].shape[1] == 4 and sparse[1]["labels"].dtype == torch.int64
    assert raw.dim() == 3 and raw.shape[0] == 2 and raw.shape[2] == 11 + 4  # 10 classes + background, 4 deltas

    adapter = get_adapter(family)
    assert adapter.family == family
    for granularity in ("single", "layer", "block"):
        units = adapter.units(model, granularity)
        covered = collections.Counter(layer for u in units for layer in u.layers)
        assert set(covered) == set(modules) and max(covered.values()) == 1, granularity
        assert _unit_order(model, units, torch.rand(1, in_chans, 64, 64)) == [u.name for u in units]


def test_block_units_reproduce_the_model_and_head_blocks_span_towers():
    from ptsbench.reconstruction.unit_data import UnitChain

    torch.manual_seed(0)
    model = _detector("small_retinanet_resnet8", 1, {})
    units = get_adapter("retinanet").units(model, "block")
    head = [u for u in units if u.name == "head.classification_head"][0]
    assert head.modules == ("head.classification_head.conv", "head.classification_head.cls_logits")
    assert len(head.layers) == 5  # 4 tower convs + the logits conv
    seen = {}

    def keep_first(key, value):  # the towers run once per pyramid level; the unit sees the first
        seen.setdefault(key, value.clone())

    hooks = [
        model.get_submodule(head.modules[0]).register_forward_pre_hook(lambda _m, a: keep_first("x", a[0])),
        model.get_submodule(head.modules[-1]).register_forward_hook(lambda _m, _a, y: keep_first("y", y)),
    ]
    with torch.no_grad():
        TASK.forward_for_calibration(model, torch.rand(2, 1, 64, 64))
        for h in hooks:
            h.remove()
        assert torch.allclose(UnitChain(model, head.modules)(seen["x"]), seen["y"], atol=1e-6)


def test_bn_folding_keeps_the_raw_detector_outputs():
    torch.manual_seed(0)
    model = _detector("small_retinanet_resnet8", 1, {})
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        before = TASK.forward_for_calibration(model, x)
        assert len(fold_batchnorm(model)) == 10  # stem, 2 per block x 3, 3 downsamples (the head has GroupNorm)
        after = TASK.forward_for_calibration(model, x)
    assert torch.allclose(before, after, atol=1e-4)


def _t(boxes, labels, iscrowd=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    if iscrowd is not None:
        t["iscrowd"] = torch.tensor(iscrowd)
    return t


def _p(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "scores": torch.tensor(scores),
        "labels": torch.tensor(labels),
    }


def test_map_of_a_hand_made_prediction_set():
    # 2 images, one ground-truth box each. Ranked detections: TP (IoU 1), FP (no overlap),
    # and a box of IoU 0.77 with image 2's ground truth. At IoU <= 0.75 the ranking is TP, FP, TP:
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; the 101-point interpolated AP is
    # (51 * 1 + 50 * 2/3) / 101. At IoU >= 0.8 the last is a FP too: AP = 51 / 101.
    gt = [_t([[0, 0, 10, 10]], [1]), _t([[0, 0, 10, 10]], [1])]
    pred = [_p([[0, 0, 10, 10]], [0.9], [1]), _p([[20, 20, 30, 30], [0, 0, 10, 7.7]], [0.8, 0.7], [1, 1])]
    ap_low, ap_high = (51 + 50 * 2 / 3) / 101, 51 / 101
    m = mean_average_precision(pred, gt)
    assert m["map50"] == pytest.approx(ap_low, abs=1e-6)
    assert m["map75"] == pytest.approx(ap_low, abs=1e-6)
    assert m["map"] == pytest.approx((6 * ap_low + 4 * ap_high) / 10, abs=1e-6)  # 6 of 10 thresholds <= 0.75

    # a second class that is never predicted has AP 0 and halves the mean; a crowd/difficult
    # box of a third class is ignored (its class has no countable ground truth at all)
    gt2 = [_t([[0, 0, 10, 10], [40, 40, 50, 50], [60, 0, 70, 9]], [1, 2, 3], [0, 0, 1]), gt[1]]
    m2 = mean_average_precision(pred, gt2)
    assert m2["map50"] == pytest.approx(ap_low / 2, abs=1e-6)


def test_map_equals_torchmetrics_mean_average_precision():
    from torchmetrics.detection import MeanAveragePrecision

    g = torch.Generator().manual_seed(0)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g) * 40
        return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 20], 1)

    gts, preds = [], []
    for i in range(30):
        n = 1 + i % 3
        gt = boxes(n)
        gts.append(
            {
                "boxes": gt,
                "labels": torch.randint(1, 4, (n,), generator=g),
                "iscrowd": (torch.rand(n, generator=g) < 0.15).long(),
            }
        )
        near = gt + torch.randn(n, 4, generator=g) * 2  # some good, some poor localisations
        det = torch.cat([near, boxes(3)])
        preds.append(
            {
                "boxes": det,
                "scores": torch.rand(len(det), generator=g),
                "labels": torch.cat([gts[-1]["labels"], torch.randint(1, 4, (3,), generator=g)]),
            }
        )
    ref = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    ref.update(preds, gts)
    want = ref.compute()
    got = mean_average_precision(preds, gts)
    for ours, theirs in (("map", "map"), ("map50", "map_50"), ("map75", "map_75"), ("mar_100", "mar_100")):
        assert got[ours] == pytest.approx(float(want[theirs]), abs=1e-6), ours
    assert 0.0 < got["map"] < got["map50"] < 1.0  # a non-trivial case


def _write_jpeg(path, h, w, seed):
    from PIL import Image

    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")


def test_coco_loader_reads_the_official_layout(tmp_path):
    root = tmp_path / "coco"
    for split in ("val2017", "train2017"):
        (root / split).mkdir(parents=True)
    (root / "annotations").mkdir()
    for i, (h, w) in enumerate([(40, 60), (50, 30)], start=1):
        _write_jpeg(root / "val2017" / f"{i:012d}.jpg", h, w, i)
    for i in range(3):
        _write_jpeg(root / "train2017" / f"t{i}.jpg", 48, 64, 10 + i)
    instances = {
        "images": [
            {"id": 2, "file_name": "000000000002.jpg", "height": 50, "width": 30},
            {"id": 1, "file_name": "000000000001.jpg", "height": 40, "width": 60},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [5, 6, 10, 20], "category_id": 18, "iscrowd": 0},
            {"id": 2, "image_id": 1, "bbox": [0, 0, 30, 30], "category_id": 1, "iscrowd": 1},
            {"id": 3, "image_id": 1, "bbox": [3, 3, 0, 5], "category_id": 1, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}],
    }
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    cfg = OmegaConf.create({"name": "coco2017", "root": str(root), "calib_size": 32})
    data = build_data(cfg, OmegaConf.create(CALIB))
    assert data.num_classes == 90 and len(data.test) == 2
    img, target = data.test[0]  # sorted by image id: image 1 first
    assert img.shape == (3, 40, 60) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert target["boxes"].tolist() == [[5, 6, 15, 26], [0, 0, 30, 30]]  # xywh -> xyxy, degenerate dropped
    assert target["labels"].tolist() == [18, 1] and target["iscrowd"].tolist() == [0, 1]
    assert len(data.test[1][1]["boxes"]) == 0  # an image without annotations stays (its detections are FPs)
    assert data.calib_inputs.shape == (3, 3, 32, 32)  # all 3 train images, no labels
    images, targets = next(iter(data.test_loader(2)))
    assert len(images) == 2 and images[1].shape == (3, 50, 30) and len(targets) == 2

    with pytest.raises(ConfigError, match="calib_split"):
        build_data(OmegaConf.create({**cfg, "calib_split": "train2014"}), OmegaConf.create(CALIB))
    with pytest.raises(ConfigError, match="dataset.root is required for dataset="):
        build_data(OmegaConf.create({"name": "coco2017", "root": None}), OmegaConf.create(CALIB))


VOC_OBJECT = (
    "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin>"
    "<xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
)
VOC_XML = (
    "<annotation><filename>{id}.jpg</filename>"
    + VOC_OBJECT.format("dog", 0, 1, 2, 20, 30)
    + VOC_OBJECT.format("person", 1, 5, 5, 9, 9)
    + "</annotation>"
)


def test_voc_loader_reads_the_devkit_layout(tmp_path):
    year = tmp_path / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year / d).mkdir(parents=True)
    for k, i in enumerate(("000001", "000002", "000005")):
        (year / "Annotations" / f"{i}.xml").write_text(VOC_XML.format(id=i))
        _write_jpeg(year / "JPEGImages" / f"{i}.jpg", 36, 40, k)
    (year / "ImageSets/Main/test.txt").write_text("000001\n000005\n")
    (year / "ImageSets/Main/trainval.txt").write_text("000002\n")
    data = build_data(
        OmegaConf.create({"name": "voc07", "root": str(tmp_path), "calib_size": 24}), OmegaConf.create(CALIB)
    )
    assert data.num_classes == 20 and len(data.test) == 2 and data.calib_inputs.shape == (1, 3, 24, 24)
    img, target = data.test[1]
    assert img.shape == (3, 36, 40)
    assert target["boxes"].tolist() == [[0, 1, 20, 30], [4, 4, 9, 9]]  # 1-based corners -> 0-based
    assert target["labels"].tolist() == [12, 15]  # dog, person in VOC's alphabetical order
    assert target["iscrowd"].tolist() == [0, 1]  # difficult objects are ignored by the evaluation
    with pytest.raises(ConfigError, match="Annotations"):
        build_data(
            OmegaConf.create({"name": "voc07", "root": str(tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages")}),
            OmegaConf.create(CALIB),
        )


def test_canvas_boxes_are_the_ink_of_the_pasted_digit():
    digit = np.zeros((1, 1, 28, 28), dtype=np.float32)
    digit[0, 0, 8:20, 12:15] = 1.0  # a "1": 12 rows x 3 columns of ink
    images, targets = make_canvases(digit, np.array([7]), n=5, canvas=40, max_digits=1, size_range=(28, 28), seed=3)
    for img, t in zip(images, targets):
        x1, y1, x2, y2 = (int(v) for v in t["boxes"][0])
        assert (x2 - x1, y2 - y1) == (3, 12) and t["labels"].tolist() == [8]
        assert img[0, y1:y2, x1:x2].min() > 0.25 and img.sum() == pytest.approx(36.0, rel=0.05)
    again, _ = make_canvases(digit, np.array([7]), n=5, canvas=40, max_digits=1, size_range=(28, 28), seed=3)
    assert np.array_equal(images, again)


def test_digits_det_bundle_and_task_checks():
    data = build_data(
        OmegaConf.create({"name": "digits_det", "num_train": 64, "num_test": 16}), OmegaConf.create(CALIB)
    )
    assert data.calib_inputs.shape == (4, 1, 64, 64) and len(data.test) == 16 and data.num_classes == 10
    counts = [len(data.test[i][1]["labels"]) for i in range(16)]
    assert 1 <= min(counts) and max(counts) <= 3
    cls_data = build_data(OmegaConf.create({"name": "digits", "num_test": 500}), OmegaConf.create(CALIB))
    with pytest.raises(ConfigError, match="task=det needs a detection dataset"):
        TASK.evaluate(_detector("small_ssdlite_mobilenetv2", 1, {}), cls_data, torch.device("cpu"))


ZOO_READY = all(
    zoo_checkpoint_path(a, "digits_det").exists() for a in ("small_retinanet_resnet8", "small_ssdlite_mobilenetv2")
)
FAST = ["task=det", "dataset=digits_det", "dataset.num_test=60", "calib.num_samples=32"]


@pytest.mark.skipif(not ZOO_READY, reason="run scripts/train_zoo_det.py first")
def test_pipeline_writes_det_records_with_dense_and_sparse_map(make_cfg):
    rec = run(make_cfg("model=zoo_retinanet_digits", "allocator=erk", "sparsity.rate=0.7", *FAST))
    validate_record(rec)
    assert rec["status"] == "ok" and rec["task"] == {"name": "det", "metric": "map50", "higher_is_better": True}
    assert rec["dense"]["map50"] > 0.8 and 0.0 <= rec["sparse"]["map50"] <= 1.0
    assert {"map", "map50", "map75"} <= set(rec["sparse"])
    sp = rec["sparsity"]
    assert abs(sp["zeros"] - int(0.7 * sp["total"])) <= len(sp["target_per_layer"])
    assert rec["folded_bn"] == 10


@pytest.mark.skipif(not ZOO_READY, reason="run scripts/train_zoo_det.py first")
def test_block_reconstruction_covers_backbone_neck_and_heads(make_cfg):
    rec = run(
        make_cfg(
            "model=zoo_ssdlite_digits",
            "reconstruction=block",
            "reconstruction.iters=4",
            "reconstruction.batch_size=8",
            "reconstruction.progress=false",
            "sparsity.rate=0.6",
            *FAST,
        )
    )
    recon = rec["reconstruction"]
    assert recon["adapter"] == "ssd" and recon["unreconstructed_layers"] == []
    names = [u["unit"] for u in recon["units"]]
    assert len(names) == 18 and names[0] == "backbone.stages.0.0.0"  # the stem conv's layer unit
    assert "backbone.stages.2" in names  # the extra stage, one block
    assert names[-3:] == [f"head.classification_head.module_list.{i}" for i in range(3)]  # one per map
    assert all(u["loss_after"] >= 0 for u in recon["units"])
