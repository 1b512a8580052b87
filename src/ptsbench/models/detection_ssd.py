"""SSD-family detectors on torchvision's ``SSD`` class (Liu et al. 2016, "SSD: Single shot
multibox detector"; paper Table 1: MobileNetV1-SSD, MobileNetV2-SSDLite on VOC07).

torchvision ships SSD with VGG and SSDLite with MobileNetV3 only, so the backbones are written
here in the layout of the widely used MobileNet SSD ports:
- MobileNetV1-SSD: MobileNetV1 (3x3 stem + 13 depthwise-separable blocks); feature maps after
  block 11 (512 ch, stride 16) and block 13 (1024 ch, stride 32), then four extra stages
  (1x1 conv + 3x3 stride-2 conv, ReLU); plain 3x3-conv SSD heads, 6 default boxes per place.
- MobileNetV2-SSDLite (MobileNetV2 paper §6.2): torchvision's MobileNetV2 features, the first map
  taken at the expansion layer of block 14 (576 ch, stride 16), the second after the last 1x1 conv
  (1280 ch, stride 32), four SSDLite extra stages (1x1, depthwise 3x3 stride 2, 1x1) and SSDLite
  heads (depthwise 3x3 + 1x1 per map).
Every stage is an ``nn.Sequential`` whose output is one feature map (``SSDStages``), so the SSD
adapter can list blocks and layers by walking the stages.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

from torch import nn

from .detection import DET_ARCHS, mean_std


class SSDStages(nn.Module):
    """Stages applied in turn; each stage's output is one feature map for the heads."""

    def __init__(self, stages: list[nn.Module], out_channels: list[int]):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.out_channels = out_channels

    def forward(self, x):
        maps = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            maps[str(i)] = x
        return maps


def conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU, norm=nn.BatchNorm2d):
    from torchvision.ops.misc import Conv2dNormActivation

    return Conv2dNormActivation(cin, cout, k, stride, groups=groups, norm_layer=norm, activation_layer=act)


class DepthwiseSeparable(nn.Sequential):
    """MobileNetV1 block: depthwise 3x3 conv-BN-ReLU, then pointwise 1x1 conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


MOBILENET_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _ssd(
    backbone: SSDStages,
    head: nn.Module,
    num_classes: int,
    in_chans: int,
    size: int,
    cfg,
    scales: list[float] | None = None,
    max_dets: int = 200,
    topk: int = 400,
):
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD

    n_maps = len(backbone.out_channels)
    anchors = DefaultBoxGenerator([[2, 3]] * n_maps, min_ratio=0.2, max_ratio=0.95, scales=scales)
    mean, std = mean_std(in_chans)
    return SSD(
        backbone,
        anchors,
        (size, size),
        num_classes,
        image_mean=mean,
        image_std=std,
        head=head,
        score_thresh=0.01,
        detections_per_img=max_dets,
        topk_candidates=topk,
    )


@DET_ARCHS.register("ssd300_mobilenet_v1")
def ssd300_mobilenet_v1(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    from torchvision.models.detection.ssd import SSDHead

    blocks = [conv_bn(in_chans, 32, 3, 2)]
    cin = 32
    for cout, stride in MOBILENET_V1:
        blocks.append(DepthwiseSeparable(cin, cout, stride))
        cin = cout
    # extra stages: 1x1 conv to half width, then a stride-2 3x3 conv (no BN, as the ported model)
    extras = [
        nn.Sequential(conv_bn(cin, mid, 1, norm=None), conv_bn(mid, cout, 3, 2, norm=None))
        for cin, mid, cout in ((1024, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256))
    ]
    out_channels = [512, 1024, 512, 256, 256, 256]
    backbone = SSDStages([nn.Sequential(*blocks[:12]), nn.Sequential(*blocks[12:]), *extras], out_channels)
    head = SSDHead(out_channels, [6] * len(out_channels), num_classes)
    return _ssd(backbone, head, num_classes, in_chans, int(cfg.image_size or 300), cfg)


def _ssdlite_mobilenet_v2(
    mnv2: Any, split: int, extra_channels: list[int], num_classes: int, norm
) -> tuple[SSDStages, nn.Module]:
    """Split torchvision MobileNetV2 ``features`` at the expansion layer of block ``split``."""
    from torchvision.models.detection.ssdlite import SSDLiteHead, _extra_block

    feats = mnv2.features
    if feats[split].use_res_connect:
        raise ValueError(f"block {split} has a residual add; the SSDLite split needs a strided block")
    expand = feats[split].conv[0]
    stage0 = nn.Sequential(*feats[:split], expand)
    stage1 = nn.Sequential(nn.Sequential(*feats[split].conv[1:]), *feats[split + 1 :])
    c0, c1 = expand.out_channels, feats[-1].out_channels
    extras, cin = [], c1
    for cout in extra_channels:
        extras.append(_extra_block(cin, cout, norm))
        cin = cout
    out_channels = [c0, c1, *extra_channels]
    backbone = SSDStages([stage0, stage1, *extras], out_channels)
    head = SSDLiteHead(out_channels, [6] * len(out_channels), num_classes, norm)
    return backbone, head


def _mobilenet_v2(in_chans: int, **kw) -> Any:  # torchvision's MobileNetV2 (untyped)
    from torchvision.models import mobilenet_v2

    m = mobilenet_v2(weights=None, **kw)
    stem = m.features[0][0]
    if in_chans != stem.in_channels:
        m.features[0][0] = nn.Conv2d(in_chans, stem.out_channels, 3, stem.stride, 1, bias=False)
    return m


SSDLITE_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


@DET_ARCHS.register("ssdlite300_mobilenet_v2")
def ssdlite300_mobilenet_v2(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    mnv2 = _mobilenet_v2(in_chans, norm_layer=SSDLITE_NORM)
    backbone, head = _ssdlite_mobilenet_v2(mnv2, 14, [512, 256, 256, 64], num_classes, SSDLITE_NORM)
    return _ssd(backbone, head, num_classes, in_chans, int(cfg.image_size or 300), cfg)


# t, c, n, s for 64x64 canvases: stride 8 at block 5's expansion, stride 16 at the end
SMALL_MNV2 = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2], [6, 64, 2, 2], [6, 96, 1, 1]]


@DET_ARCHS.register("small_ssdlite_mobilenetv2")
def small_ssdlite_mobilenetv2(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """The embedded SSDLite: MobileNetV2 x0.5 with a short block table; maps at stride 8 (8x8),
    16 (4x4) and one extra stage (2x2); default-box scales fitted to 7-22 px digits."""
    mnv2 = _mobilenet_v2(in_chans, width_mult=0.5, inverted_residual_setting=SMALL_MNV2, norm_layer=SSDLITE_NORM)
    last = mnv2.features[-1][0]  # a 256-channel last 1x1 conv instead of torchvision's fixed 1280
    mnv2.features[-1] = conv_bn(last.in_channels, 256, 1, act=nn.ReLU6, norm=SSDLITE_NORM)
    backbone, head = _ssdlite_mobilenet_v2(mnv2, 6, [64], num_classes, SSDLITE_NORM)
    # at most 3 digits per canvas: 20 detections per image and 50 candidates per class lose
    # nothing, and keep a collapsed sparse model (every anchor above the score threshold) fast
    return _ssd(
        backbone,
        head,
        num_classes,
        in_chans,
        int(cfg.image_size or img_size),
        cfg,
        scales=[0.2, 0.35, 0.6, 0.85],
        max_dets=20,
        topk=50,
    )
