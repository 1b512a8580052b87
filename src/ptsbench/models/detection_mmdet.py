"""OpenMMLab detectors as a model source (paper Table 1, DET): ``model.source=mmdet``.

The paper's RetinaNet-R18/R50 come from the OpenMMLab model zoo. ``model.config`` names an mmdet
config: a file path, a file of ``models/mmdet_configs/`` (e.g. ``retinanet_r18_digits.py``), or a
config shipped with mmdet (``retinanet/retinanet_r18_fpn_1x_coco.py``); mmengine's ``Config``
reads it and mmdet's registry builds the detector. Nothing is downloaded: ``init_cfg`` entries of
type ``Pretrained`` (``torchvision://resnet18`` backbones) are stripped, the rest of the init runs
(random weights), and ``model.weights`` is a local mmengine checkpoint read without unpickling its
metadata (:func:`read_mmdet_weights`, by :mod:`ptsbench.safe_load`).

:class:`MMDetDetector` gives the detector the interface the DET task uses: ``model(images)`` on
float ``[C, H, W]`` images in [0, 1] returns torchvision-style detections in input pixels. Each
image goes through the config's own ``test_pipeline`` (its ``LoadImageFromFile`` replaced by
``LoadImageFromNDArray`` on the image as uint8, grey ``H x W`` or BGR ``H x W x 3`` as mmcv would
have read it from disk), then the detector's ``data_preprocessor`` and ``predict(rescale=True)``:
mmdet's test-time preprocessing, so its detections, and hence the mAP, are the ones mmdet's own
test loop produces on the same pixels. Labels: mmdet numbers classes 0..K-1; a dataset numbers
them 1..K (COCO: category ids), so label ``i`` becomes ``model.label_ids[i]`` (default ``i + 1``;
COCO's 80 category ids when an 80-class head meets coco2017's 90 ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..schemas import knob
from .sources import MODEL_SOURCES, ModelConfig, weights_path

CONFIG_DIR = Path(__file__).resolve().parent / "mmdet_configs"
INSTALL_HINT = "install OpenMMLab with `make install-mm` (mmengine, mmdet 3.3 and an mmcv 2.1 built with its ops)"
# the 80 COCO category ids in mmdet's class order (label i -> COCO_IDS[i])
COCO_IDS = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
)


def require_mm() -> None:
    """ConfigError (one line, naming the install command) when OpenMMLab is not importable."""
    try:
        import mmcv  # noqa: F401
        import mmdet  # noqa: F401
        import mmengine  # noqa: F401
        from mmcv import ops  # noqa: F401  (mmdet.models needs the compiled ops)
    except ImportError as e:
        raise ConfigError(f"model.source=mmdet needs OpenMMLab ({e}); {INSTALL_HINT}") from None


def config_file(name: str) -> Path:
    """The mmdet config file ``model.config`` names: a path, a PTSBench config, or one of mmdet's."""
    candidates = [Path(name).expanduser(), CONFIG_DIR / name]
    try:
        import mmdet

        candidates.append(Path(mmdet.__file__).parent / ".mim" / "configs" / name)
    except ImportError:
        pass
    for path in candidates:
        for p in (path, path.with_name(path.name + ".py")):
            if p.is_file():
                return p
    raise ConfigError(
        f"model.config='{name}' is not an mmdet config file; pass a path, a file of {CONFIG_DIR} "
        f"({', '.join(sorted(p.name for p in CONFIG_DIR.glob('*.py')))}), or a config shipped "
        f"with mmdet such as retinanet/retinanet_r18_fpn_1x_coco.py"
    )


def strip_pretrained(node) -> int:
    """Remove every ``init_cfg`` of type ``Pretrained`` (a download) from a config tree; the count."""
    removed = 0
    if isinstance(node, dict):
        init = node.get("init_cfg")
        if isinstance(init, dict) and init.get("type") == "Pretrained":
            node["init_cfg"] = None
            removed += 1
        for value in node.values():
            removed += strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        removed += sum(strip_pretrained(v) for v in node)
    return removed


def load_config(name: str):
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_file(name)))
    strip_pretrained(cfg.model)
    return cfg


class MMDetDetector(nn.Module):
    """An mmdet detector behind torchvision's detection interface (see the module docstring)."""

    def __init__(self, detector: Any, test_pipeline: list, label_ids: list[int], in_chans: int):
        super().__init__()
        from mmcv.transforms import Compose

        self.detector: Any = detector  # an mmdet detector (mmdet is untyped)
        steps = [dict(s) for s in test_pipeline if s["type"].split(".")[-1] != "LoadAnnotations"]
        if steps and steps[0]["type"].split(".")[-1].startswith("LoadImageFrom"):
            steps[0] = {"type": "mmdet.LoadImageFromNDArray"}
        self.pipeline = Compose(steps)
        resize = next((s for s in steps if s["type"].split(".")[-1] == "Resize" and s.get("scale")), None)
        # pixels of one resized image: bounds the DET task's batch (COCO: 1333 x 800)
        self.input_pixels = int(resize["scale"][0]) * int(resize["scale"][1]) if resize else None
        self.label_ids = torch.as_tensor(label_ids, dtype=torch.int64)
        self.in_chans = in_chans

    def _as_mmcv_image(self, image: torch.Tensor):
        pixels = image.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu()
        if self.in_chans == 1:
            return pixels[0].numpy()
        return pixels.flip(0).permute(1, 2, 0).contiguous().numpy()  # RGB -> BGR, as cv2 reads files

    def preprocess(self, images) -> dict:
        from mmengine.dataset import pseudo_collate

        data = [self.pipeline({"img": self._as_mmcv_image(img), "img_id": i}) for i, img in enumerate(images)]
        preprocessor = self.detector.data_preprocessor
        preprocessor._device = next(self.detector.parameters()).device  # wrapped: .to() does not reach it
        return preprocessor(pseudo_collate(data), training=False)

    def forward(self, images) -> list[dict[str, torch.Tensor]]:
        batch = self.preprocess(images)
        samples = self.detector.predict(batch["inputs"], batch["data_samples"], rescale=True)
        out = []
        for s in samples:
            p = s.pred_instances
            out.append({"boxes": p.bboxes, "scores": p.scores, "labels": self.label_ids.to(p.labels.device)[p.labels]})
        return out

    def raw_head_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits and box deltas of every anchor, ``[N, anchors, classes + 4]``."""
        batch = self.preprocess(list(x))
        cls_scores, bbox_preds = self.detector.bbox_head(self.detector.extract_feat(batch["inputs"]))
        n = x.shape[0]
        flat = [
            torch.cat(
                [
                    c.permute(0, 2, 3, 1).reshape(n, -1, c.shape[1] // (b.shape[1] // 4)),
                    b.permute(0, 2, 3, 1).reshape(n, -1, 4),
                ],
                dim=-1,
            )
            for c, b in zip(cls_scores, bbox_preds)
        ]
        return torch.cat(flat, dim=1)


def _label_ids(cfg, head_classes: int, num_classes: int) -> list[int]:
    ids = cfg.label_ids
    if ids is not None:
        ids = [int(i) for i in ids]
        if len(ids) != head_classes:
            raise ConfigError(f"model.label_ids has {len(ids)} ids, but the mmdet head predicts {head_classes} classes")
        return ids
    if head_classes == num_classes:
        return list(range(1, num_classes + 1))
    if head_classes == len(COCO_IDS) and num_classes == 90:
        return list(COCO_IDS)
    raise ConfigError(
        f"model.config: the mmdet head predicts {head_classes} classes but the dataset has "
        f"{num_classes}; pass model.label_ids=[...] (dataset label of each mmdet class) or a "
        f"config whose bbox_head.num_classes is {num_classes}"
    )


def _quiet_init(detector: Any) -> None:
    """mmdet's ``init_weights`` (the config's init_cfg: normal heads, prior-probability bias), without
    mmengine's one log line per parameter."""
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        detector.init_weights()
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class MMDetModelConfig(ModelConfig):
    config: str = knob(required=True)  # an mmengine config: mmdet_configs/ name, a path, or one shipped with mmdet
    label_ids: list[int] | None = knob(None)  # dataset label of each mmdet class (default 1..K)


def read_mmdet_weights(path: Path) -> dict[str, torch.Tensor]:
    """The detector tensors of an mmengine checkpoint (``state_dict``, ``module.`` dropped); its
    metadata (``ConfigDict``, ``HistoryBuffer``, numpy scalars) stays inert, never imported or run."""
    from ..safe_load import read_state_dict

    return read_state_dict(path, "model.weights")


def check_mmdet_config(cfg: MMDetModelConfig) -> None:
    """Cheap checks before any data is loaded: OpenMMLab importable, config and weights present."""
    require_mm()
    if not cfg.config:
        raise ConfigError(
            "model.config is required with model.source=mmdet: an mmdet config file or a config "
            "shipped with mmdet, e.g. model.config=retinanet/retinanet_r18_fpn_1x_coco.py"
        )
    config_file(str(cfg.config))
    weights_path(cfg, str(cfg.trained_on or ""))


# loads_weights: the mmdet checkpoint is read here (state_dict inside an mmengine checkpoint)
@MODEL_SOURCES.register("mmdet", config=MMDetModelConfig, check=check_mmdet_config, loads_weights=True)
def build_mmdet(cfg: MMDetModelConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """Build the detector of ``model.config`` and load ``model.weights`` (a local checkpoint or none)."""
    require_mm()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    mcfg = load_config(str(cfg.config))
    backbone_chans = int(mcfg.model.backbone.get("in_channels", 3))
    if backbone_chans != in_chans:
        raise ConfigError(
            f"model.config={cfg.config}: its backbone reads {backbone_chans}-channel images, the "
            f"dataset has {in_chans}; pick a config made for this dataset"
        )
    detector = MODELS.build(mcfg.model)
    _quiet_init(detector)
    path = weights_path(cfg, str(cfg.trained_on or ""))
    if path is not None:
        try:
            detector.load_state_dict(read_mmdet_weights(path))
        except RuntimeError as e:
            raise ConfigError(
                f"model.weights: {path} does not fit model.config={cfg.config}: {' '.join(str(e).split())[:600]}"
            ) from None
    head_classes = int(detector.bbox_head.num_classes)
    return MMDetDetector(
        detector.eval(), list(mcfg.test_pipeline), _label_ids(cfg, head_classes, num_classes), in_chans
    )
