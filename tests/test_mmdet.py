"""mmdet as a model source: a small mmdet RetinaNet (ResNet-18 depth, quarter widths, random
weights) builds from an mmengine config, runs the DET task on digits_det with mmdet's own test-time
preprocessing, folds its BNs, reconstructs at block granularity with the masks intact, and loads
mmengine checkpoints whose metadata torch's weights-only unpickler refuses. Its detections equal
mmdet's test loop on the same images read from disk, and the DET task's mAP equals mmdet's
CocoMetric. Without OpenMMLab these tests skip, naming `make install-mm`."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ptsbench.config.spec import resolve
from ptsbench.data import build_data
from ptsbench.data.digits_det import export_coco
from ptsbench.errors import ConfigError
from ptsbench.models import build_model
from ptsbench.models.adapters import get_adapter
from ptsbench.models.detection_mmdet import require_mm
from ptsbench.run import run
from ptsbench.sparsity.layers import fold_batchnorm, prunable_modules
from ptsbench.tasks import EvalConfig, TaskConfig
from ptsbench.tasks.detection import DetectionTask, mean_average_precision

try:
    require_mm()
    MM_MISSING = None
except ConfigError as e:
    MM_MISSING = str(e)
needs_mm = pytest.mark.skipif(MM_MISSING is not None, reason=str(MM_MISSING))  # the reason names `make install-mm`

CFG = {
    "name": "mmdet_retinanet_digits",
    "source": "mmdet",
    "config": "retinanet_r18_digits.py",
    "family": "mmdet_retinanet",
    "weights": "none",
    "trained_on": "digits_det",
}
TASK = DetectionTask(TaskConfig(name="det", metric="map"), EvalConfig(batch_size=8))
CALIB = {"num_samples": 4, "seed": 0}
# ResNet-18: stem + 8 BasicBlocks x 2 convs + 3 downsamples; FPN: 3 laterals, 3 outputs, P6, P7; 2 + 2 tower convs + 2
N_LAYERS = 20 + 8 + 6
N_ANCHORS = (8 * 8 + 4 * 4 + 2 * 2 + 1 + 1) * 9  # P3-P7 of a 64x64 canvas, 3 scales x 3 ratios


def _model(**knobs):
    torch.manual_seed(0)
    return build_model(OmegaConf.create({**CFG, **knobs}), 10, 1, 64, "digits_det")


def _digits(num_test=16):
    return build_data(
        OmegaConf.create({"name": "digits_det", "num_train": 64, "num_test": num_test}), OmegaConf.create(CALIB)
    )


def test_mmdet_source_without_openmmlab_names_make_install_mm(make_cfg):
    if MM_MISSING is None:
        pytest.skip("OpenMMLab is installed (the error path needs it absent)")
    with pytest.raises(ConfigError, match=r"make install-mm"):
        resolve(make_cfg("task=det", "dataset=digits_det", "model=mmdet_retinanet_digits"))


@needs_mm
def test_mmdet_config_errors_name_the_knob(make_cfg):
    with pytest.raises(ConfigError, match=r"model.config='nope.py' is not an mmdet config file.*retinanet_r18_digits"):
        resolve(make_cfg("task=det", "dataset=digits_det", "model=mmdet_retinanet_digits", "model.config=nope.py"))
    with pytest.raises(ConfigError, match=r"backbone reads 1-channel images, the dataset has 3"):
        build_model(OmegaConf.create(CFG), 10, 3, 64, "digits_det")


@needs_mm
def test_stock_mmdet_config_builds_offline_with_its_download_stripped():
    from ptsbench.models.detection_mmdet import load_config

    cfg = load_config("retinanet/retinanet_r18_fpn_1x_coco.py")
    assert cfg.model.backbone.init_cfg is None  # was torchvision://resnet18
    assert cfg.model.backbone.depth == 18 and cfg.model.bbox_head.num_classes == 80


@needs_mm
def test_mmdet_retinanet_runs_det_task_folds_bn_and_lists_units_in_order():
    model = _model()
    data = _digits()
    metrics = TASK.evaluate(model, data, torch.device("cpu"))
    assert set(metrics) == {"map", "map50", "map75", "mar_100"}
    x = torch.rand(2, 1, 64, 64)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # non-trivial BN statistics, so folding is a real test
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    with torch.no_grad():
        before = TASK.forward_for_calibration(model, x)
    assert before.shape == (2, N_ANCHORS, 10 + 4)
    assert len(fold_batchnorm(model)) == 20  # every BN of the ResNet-18 backbone
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        after = TASK.forward_for_calibration(model, x)
    assert torch.allclose(before, after, atol=1e-4)

    modules = prunable_modules(model)
    assert len(modules) == N_LAYERS
    adapter = get_adapter("mmdet_retinanet")
    for granularity, n_units in (("single", N_LAYERS), ("layer", N_LAYERS), ("block", 1 + 8 + 8 + 2)):
        units = adapter.units(model, granularity)
        covered = collections.Counter(layer for u in units for layer in u.layers)
        assert set(covered) == set(modules) and max(covered.values()) == 1, granularity
        assert len(units) == n_units, granularity
        seen, hooks = [], []
        for u in units:
            hooks.append(
                model.get_submodule(u.modules[0]).register_forward_pre_hook(
                    lambda _m, _a, name=u.name: None if name in seen else seen.append(name)
                )
            )
        with torch.no_grad():
            TASK.forward_for_calibration(model, x[:1])
        for h in hooks:
            h.remove()
        assert seen == [u.name for u in units], granularity  # execution order, for input=sparse
    head = [u for u in adapter.units(model, "block") if u.name == "detector.bbox_head.cls_convs"][0]
    assert head.modules[-1] == "detector.bbox_head.retina_cls" and len(head.layers) == 3


@needs_mm
def test_cli_run_reconstructs_mmdet_blocks_with_masks_intact(make_cfg):
    rec = run(
        make_cfg(
            "task=det",
            "dataset=digits_det",
            "dataset.num_test=16",
            "calib.num_samples=8",
            "model=mmdet_retinanet_digits",
            "allocator=erk",
            "reconstruction=block",
            "reconstruction.iters=3",
            "reconstruction.batch_size=4",
            "reconstruction.progress=false",
            "sparsity.rate=0.6",
        )
    )
    assert rec["status"] == "ok" and rec["folded_bn"] == 20
    recon = rec["reconstruction"]
    assert recon["adapter"] == "mmdet_retinanet" and recon["unreconstructed_layers"] == []
    names = [u["unit"] for u in recon["units"]]
    assert len(names) == 19 and names[0] == "detector.backbone.conv1" and names[1] == "detector.backbone.layer1.0"
    assert names[-2:] == ["detector.bbox_head.cls_convs", "detector.bbox_head.reg_convs"]
    sp = rec["sparsity"]  # counted zeros after reconstruction: the masks held
    assert abs(sp["zeros"] - int(0.6 * sp["total"])) <= len(sp["target_per_layer"])
    assert {"map", "map50"} <= set(rec["dense"]) and {"map", "map50"} <= set(rec["sparse"])


@needs_mm
def test_mmengine_checkpoint_round_trips_through_model_weights(tmp_path):
    from mmengine.config import ConfigDict
    from mmengine.logging import HistoryBuffer

    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "epoch_12.pth"
    torch.save(
        {
            "meta": {"mmdet_version": "3.3.0", "epoch": 12, "cfg": ConfigDict(lr=0.01), "seed": np.int64(3)},
            "state_dict": {f"module.{k}": v for k, v in model.detector.state_dict().items()},
            "message_hub": {"log_scalars": {"loss": HistoryBuffer([1.0, 0.5], [1, 1])}},
        },
        path,
    )
    with pytest.raises(pickle.UnpicklingError):  # why the loader unpickles the metadata inertly
        torch.load(path, weights_only=True)
    loaded = _model(weights=str(path))
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(TASK.forward_for_calibration(loaded, x), TASK.forward_for_calibration(model, x))
        assert not torch.equal(TASK.forward_for_calibration(_model(), x), TASK.forward_for_calibration(model, x))
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(3)}}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"does not fit model.config=retinanet_r18_digits.py"):
        _model(weights=str(tmp_path / "bad.pth"))


@needs_mm
def test_detections_and_map_match_mmdet_test_loop_and_coco_metric(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from mmengine.dataset import pseudo_collate

    from ptsbench.models.detection_mmdet import load_config

    data = _digits(num_test=8)
    ann = export_coco(data.test, 10, tmp_path, "ann.json")  # PNGs as the mmdet wrapper quantises them
    model = _model()
    with torch.no_grad():  # scores near 0.5 instead of the 0.01 prior: 100 detections per canvas to compare
        model.detector.bbox_head.retina_cls.bias.zero_()
    classes = tuple(str(d) for d in range(10))
    ds = CocoDataset(
        ann_file=str(ann),
        data_prefix={"img": str(tmp_path) + "/"},
        metainfo={"classes": classes},
        pipeline=list(load_config(CFG["config"]).test_pipeline),
        test_mode=True,
    )
    metric = CocoMetric(ann_file=str(ann), metric="bbox")
    metric.dataset_meta = ds.metainfo
    ours, theirs = [], []
    for i in range(len(ds)):
        batch = pseudo_collate([ds[i]])
        with torch.no_grad():
            sample = model.detector.test_step(batch)[0]
            mine = model([data.test[batch["data_samples"][0].img_id][0]])[0]
        p = sample.pred_instances
        assert len(p.bboxes) == 100 and torch.allclose(mine["boxes"], p.bboxes, atol=1e-4)
        assert torch.allclose(mine["scores"], p.scores) and torch.equal(mine["labels"], p.labels + 1)
        metric.process(batch, [sample.to_dict()])
        ours.append(mine)
        theirs.append(data.test[batch["data_samples"][0].img_id][1])
    mm = metric.compute_metrics(metric.results)
    mine = mean_average_precision(ours, theirs)
    assert abs(mine["map"] - mm["bbox_mAP"]) <= 0.001 and abs(mine["map50"] - mm["bbox_mAP_50"]) <= 0.001

    # the same evaluators on detections near the ground truth, so the compared mAP is far from 0
    rng = np.random.default_rng(0)
    metric.results = []
    near = []
    for i in range(len(ds)):
        t = theirs[i]
        boxes = t["boxes"] + torch.as_tensor(rng.normal(0, 1.5, t["boxes"].shape), dtype=torch.float32)
        scores = torch.as_tensor(rng.uniform(0.3, 1.0, len(boxes)), dtype=torch.float32)
        labels = torch.where(torch.as_tensor(rng.uniform(size=len(boxes)) < 0.8), t["labels"], (t["labels"] % 10) + 1)
        near.append({"boxes": boxes, "scores": scores, "labels": labels})
        metric.results.append(
            (
                {"img_id": i, "width": 64, "height": 64},  # CocoMetric keeps (gt, prediction)
                {"img_id": i, "bboxes": boxes.numpy(), "scores": scores.numpy(), "labels": (labels - 1).numpy()},
            )
        )
    mm = metric.compute_metrics(metric.results)
    mine = mean_average_precision(near, theirs)
    assert mine["map50"] > 0.3
    assert abs(mine["map"] - mm["bbox_mAP"]) <= 0.001 and abs(mine["map50"] - mm["bbox_mAP_50"]) <= 0.001
