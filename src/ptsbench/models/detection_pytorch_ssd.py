"""The SSDs of ``qfgaohao/pytorch-ssd`` (the paper's MobileNetV1-SSD and MobileNetV2-SSD-Lite on
VOC07), ported onto torchvision's ``SSD`` so their published checkpoints (``mb1-ssd``,
``mb2-ssd-lite``) load with ``model.weights=<file>`` and evaluate as that repository does.

What the port keeps from that repository (its architecture, ``generate_ssd_priors``, box coding
and ``PredictionTransform``):
- architectures: ``mb1_ssd`` is MobileNetV1 (BN+ReLU), maps after its 12th and 14th layer
  (512 ch at stride 16, 1024 ch at stride 32), four extra stages (1x1 conv + ReLU, 3x3 stride-2
  conv + ReLU) and one 3x3 conv per map and head, 6 priors per place; ``mb2_ssd_lite`` is
  MobileNetV2 (BN eps 1e-5, ReLU6) with its first map at block 14's expansion (576 ch), the second
  after the last 1x1 conv (1280 ch), four extra stages that are inverted residuals without a skip
  (expansion 0.2, 0.25, 0.5, 0.25; linear 1x1 projection + BN) and SSDLite heads (depthwise 3x3 +
  BN + ReLU6, then 1x1) except a plain 1x1 conv on the last, 1x1 map;
- priors: ``mobilenetv1_ssd_config`` (both nets): maps 19/10/5/3/2/1 with shrinkage
  16/32/64/100/150/300 of a 300 px image (centres at (i + 0.5) * shrinkage / 300, not at the map's
  own grid), box sizes 60-105-150-195-240-285-330 px, aspect ratios 2 and 3; per place: the min
  square, the sqrt(min*max) square, then w*sqrt(r) x h/sqrt(r) and w/sqrt(r) x h*sqrt(r) per ratio,
  clamped to [0, 1];
- box coding: centre variance 0.1, size variance 0.2 (torchvision's BoxCoder weights 10, 10, 5, 5);
- preprocessing: resize to 300 x 300, (pixel - 127) / 128 on RGB;
- post-processing: softmax, per class score > 0.01, at most 200 candidates per class, hard NMS at
  IoU 0.45. torchvision additionally clips boxes to the image (the repository does not).
A checkpoint in the repository's key layout (``base_net.*``, ``extras.*``,
``classification_headers.*``, ``regression_headers.*``) is mapped onto these modules by
:func:`from_pytorch_ssd` (the biases of mb2-ssd-lite's depthwise head convs, which feed a BN, move
into that BN's running mean).
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import torch
from torch import nn

from .detection import DET_ARCHS
from .detection_ssd import SSDStages, conv_bn, ssd300_mobilenet_v1

IMAGE_SIZE = 300
# (feature map size, shrinkage, min box, max box) of mobilenetv1_ssd_config; aspect ratios 2, 3
SPECS = (
    (19, 16, 60, 105),
    (10, 32, 105, 150),
    (5, 64, 150, 195),
    (3, 100, 195, 240),
    (2, 150, 240, 285),
    (1, 300, 285, 330),
)
RATIOS = (2, 3)
MEAN, STD = [127 / 255] * 3, [128 / 255] * 3


def pytorch_ssd_priors() -> torch.Tensor:
    """The repository's priors, ``[N, 4]`` centre form (cx, cy, w, h) relative to the image."""
    priors = []
    for fm, shrinkage, lo, hi in SPECS:
        scale = IMAGE_SIZE / shrinkage
        for j, i in itertools.product(range(fm), repeat=2):
            cx, cy = (i + 0.5) / scale, (j + 0.5) / scale
            small, big = lo / IMAGE_SIZE, math.sqrt(lo * hi) / IMAGE_SIZE
            priors += [[cx, cy, small, small], [cx, cy, big, big]]
            for r in RATIOS:
                s = math.sqrt(r)
                priors += [[cx, cy, small * s, small / s], [cx, cy, small / s, small * s]]
    return torch.tensor(priors).clamp_(0.0, 1.0)


class PytorchSSDPriors(nn.Module):
    """Anchor generator for torchvision's SSD: the repository's priors as corner boxes in pixels
    of the (resized) input."""

    corners: torch.Tensor  # a buffer

    def __init__(self):
        super().__init__()
        p = pytorch_ssd_priors()
        self.register_buffer(
            "corners", torch.cat([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], 1), persistent=False
        )

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(RATIOS)] * len(SPECS)

    def forward(self, images, features):
        h, w = images.tensors.shape[-2:]
        scale = torch.tensor([w, h, w, h], dtype=self.corners.dtype, device=self.corners.device)
        boxes = (self.corners * scale).to(features[0].dtype)
        return [boxes for _ in range(images.tensors.shape[0])]


def _as_pytorch_ssd(model: Any, cfg) -> nn.Module:  # torchvision's SSD (untyped)
    model.anchor_generator = PytorchSSDPriors()
    model.transform.image_mean, model.transform.image_std = MEAN, STD
    # pytorch-ssd's own test-time settings (its predictor: prob threshold 0.01, top 200, NMS IoU 0.45)
    model.score_thresh = 0.01
    model.topk_candidates = 200
    model.nms_thresh = 0.45
    model.detections_per_img = 200
    model.foreign_layouts = {"pytorch_ssd": from_pytorch_ssd}
    return model


@DET_ARCHS.register("mb1_ssd")
def mb1_ssd(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """pytorch-ssd's ``mb1-ssd``: the layers of ``ssd300_mobilenet_v1`` with the repository's
    priors, normalisation and post-processing."""
    return _as_pytorch_ssd(ssd300_mobilenet_v1(cfg, num_classes, in_chans, IMAGE_SIZE), cfg)


def _linear_bottleneck(cin: int, cout: int, expand: float) -> nn.Sequential:
    """An inverted residual without skip: 1x1 expand, depthwise 3x3 stride 2, linear 1x1 + BN."""
    hidden = round(cin * expand)
    return nn.Sequential(
        conv_bn(cin, hidden, 1, act=nn.ReLU6),
        conv_bn(hidden, hidden, 3, 2, groups=hidden, act=nn.ReLU6),
        conv_bn(hidden, cout, 1, act=None),
    )


@DET_ARCHS.register("mb2_ssd_lite")
def mb2_ssd_lite(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    from .detection_ssd import _mobilenet_v2

    feats = _mobilenet_v2(in_chans).features
    stage0 = nn.Sequential(*feats[:14], feats[14].conv[0])
    stage1 = nn.Sequential(nn.Sequential(*feats[14].conv[1:]), *feats[15:])
    extras = [
        _linear_bottleneck(cin, cout, e)
        for cin, cout, e in ((1280, 512, 0.2), (512, 256, 0.25), (256, 256, 0.5), (256, 64, 0.25))
    ]
    out_channels = [576, 1280, 512, 256, 256, 64]
    backbone = SSDStages([stage0, stage1, *extras], out_channels)
    head = SSDLiteHead(out_channels, [6] * 6, num_classes, nn.BatchNorm2d)
    head.classification_head.module_list[5] = nn.Conv2d(64, 6 * num_classes, 1)
    head.regression_head.module_list[5] = nn.Conv2d(64, 6 * 4, 1)
    model = SSD(
        backbone, PytorchSSDPriors(), (IMAGE_SIZE, IMAGE_SIZE), num_classes, image_mean=MEAN, image_std=STD, head=head
    )
    return _as_pytorch_ssd(model, cfg)


# --- the repository's key layout -> these modules -------------------------------------------------
# MobileNetV2 InvertedResidual: the repository keeps one flat `conv` Sequential (conv, bn, relu6, ...),
# torchvision nests Conv2dNormActivation; position in the flat list -> torchvision suffix
_IR_EXPAND = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}
_IR_NO_EXPAND = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}
_IR14_REST = {"3": "0.0", "4": "0.1", "6": "1", "7": "2"}  # block 14 after its expansion
_EXTRA = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2.0", "7": "2.1"}


def _mb1_key(key: str) -> str:
    m = re.match(r"base_net\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        layer, pos, rest = int(m[1]), m[2], m[3]
        stage, idx = (0, layer) if layer < 12 else (1, layer - 12)
        inner = f"{pos}" if layer == 0 else {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1"}[pos]
        return f"backbone.stages.{stage}.{idx}.{inner}.{rest}"
    m = re.match(r"extras\.(\d+)\.(\d+)\.(.+)", key)
    if m:
        return f"backbone.stages.{int(m[1]) + 2}.{int(m[2]) // 2}.0.{m[3]}"
    return key


def _mb2_key(key: str) -> str:
    m = re.match(r"base_net\.(\d+)\.(?:conv\.)?(\d+)\.(.+)", key)
    if m:
        layer, pos, rest = int(m[1]), m[2], m[3]
        if layer == 0:
            return f"backbone.stages.0.0.{pos}.{rest}"
        if layer == 18:
            return f"backbone.stages.1.4.{pos}.{rest}"
        inner = (_IR_NO_EXPAND if layer == 1 else _IR_EXPAND)[pos]
        if layer < 14:
            return f"backbone.stages.0.{layer}.conv.{inner}.{rest}"
        if layer == 14:  # split after the expansion: stage 0 ends with it, stage 1 starts with the rest
            if pos in ("0", "1"):
                return f"backbone.stages.0.14.{pos}.{rest}"
            return f"backbone.stages.1.0.{_IR14_REST[pos]}.{rest}"
        return f"backbone.stages.1.{layer - 14}.conv.{inner}.{rest}"
    m = re.match(r"extras\.(\d+)\.conv\.(\d+)\.(.+)", key)
    if m:
        return f"backbone.stages.{int(m[1]) + 2}.{_EXTRA[m[2]]}.{m[3]}"
    m = re.match(r"(classification|regression)_headers\.(\d+)\.(weight|bias)$", key)
    if m:  # the last map's plain 1x1 conv
        return f"head.{m[1]}_head.module_list.{m[2]}.{m[3]}"
    m = re.match(r"(classification|regression)_headers\.(\d+)\.(\d+)\.(.+)", key)
    if m:  # SeperableConv2d: depthwise conv (bias), BN, ReLU6, 1x1 conv
        inner = {"0": "0.0", "1": "0.1", "3": "1"}[m[3]]
        return f"head.{m[1]}_head.module_list.{m[2]}.{inner}.{m[4]}"
    return key


def from_pytorch_ssd(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state`` mapped from the repository's layout to ``model``'s keys; None if it is not that layout."""
    if not any(k.startswith("base_net.") for k in state):
        return None
    lite = "base_net.1.conv.0.weight" in state
    out: dict[str, torch.Tensor] = {}
    dw_bias: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"(classification|regression)_headers\.(\d+)\.(.+)", key)
        if m and not lite:
            out[f"head.{m[1]}_head.module_list.{m[2]}.{m[3]}"] = value
            continue
        if m and lite and m[3] == "0.bias" and value.dim() == 1 and f"{m[1]}_headers.{m[2]}.1.running_mean" in state:
            dw_bias[f"head.{m[1]}_head.module_list.{m[2]}.0.1.running_mean"] = value
            continue
        out[(_mb2_key if lite else _mb1_key)(key)] = value
    for bn_mean, bias in dw_bias.items():  # BN(conv(x) + b) == BN with running_mean - b on conv(x)
        out[bn_mean] = out[bn_mean] - bias
    return out
