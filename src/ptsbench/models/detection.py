"""Detectors on torchvision's detection stack (paper Table 1, DET; docs/methods.md#model-repository): ``model.source=torchvision_det``.

RetinaNet (Lin et al. 2017, "Focal loss for dense object detection"): a ResNet body, an FPN neck
on C3-C5 with P6/P7 from extra stride-2 convs, and two 4-conv head towers shared over the pyramid
levels. RetinaNet-R18 and -R50 follow torchvision's ``retinanet_resnet50_fpn`` (v1) layout, so a
checkpoint of that model loads with ``model.weights=<path>``. The SSD family lives in
``detection_ssd.py``. Weights come only from local files (``model.weights``); the backbone is
never downloaded (``weights_backbone=None``), so every architecture builds offline.

Class labels: a dataset numbers its K foreground classes 1..K, and every detector here predicts
K + 1 classes (index 0 = background for SSD, unused by RetinaNet), so COCO's 90 category ids
give torchvision's 91-way COCO heads.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from ..registry import Registry
from . import zoo
from .sources import MODEL_SOURCES, LibraryModelConfig

DET_ARCHS: Registry = Registry("detection architecture", "model.arch")

# Grey canvases of the embedded set are normalised like MNIST; RGB images like ImageNet.
GREY_MEAN_STD = ([0.1307], [0.3081])
RGB_MEAN_STD = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def mean_std(in_chans: int) -> tuple[list[float], list[float]]:
    if in_chans == 1:
        return GREY_MEAN_STD
    if in_chans == 3:
        return RGB_MEAN_STD
    return [0.5] * in_chans, [0.25] * in_chans


@MODEL_SOURCES.register("torchvision_det", config=LibraryModelConfig)
def build_detector(cfg: LibraryModelConfig, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """``num_classes`` is the dataset's foreground count K; the detector gets K + 1 outputs."""
    return DET_ARCHS.get(cfg.arch)(cfg, num_classes + 1, in_chans, img_size)


def _set_stem(resnet: Any, in_chans: int) -> None:  # a torchvision ResNet (untyped)
    if in_chans != resnet.conv1.in_channels:
        old = resnet.conv1
        resnet.conv1 = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)


def _retinanet(cfg, num_classes, in_chans, depth: int) -> nn.Module:
    from torchvision.models import resnet18, resnet50
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    body = {18: resnet18, 50: resnet50}[depth](weights=None)
    _set_stem(body, in_chans)
    backbone = _resnet_fpn_extractor(body, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    mean, std = mean_std(in_chans)
    return RetinaNet(
        backbone,
        num_classes,
        min_size=int(cfg.min_size or 800),  # torchvision's COCO sizes
        max_size=int(cfg.max_size or 1333),
        image_mean=mean,
        image_std=std,
    )


@DET_ARCHS.register("retinanet_resnet18_fpn")
def retinanet_resnet18_fpn(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return _retinanet(cfg, num_classes, in_chans, 18)


@DET_ARCHS.register("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return _retinanet(cfg, num_classes, in_chans, 50)


class SmallResNetBody(nn.Module):
    """A ResNet-8 body for 64x64 canvases: 3x3 stride-2 stem, then three stages of one basic
    block (16/32/64 channels, each stride 2: C2..C4 at strides 4/8/16). Attribute names follow
    torchvision's ResNet, so the ResNet adapter's block lists serve it."""

    def __init__(self, in_chans: int, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        self.layer1 = nn.Sequential(zoo.BasicBlock(width, width, 2))
        self.layer2 = nn.Sequential(zoo.BasicBlock(width, 2 * width, 2))
        self.layer3 = nn.Sequential(zoo.BasicBlock(2 * width, 4 * width, 2))

    def forward(self, x):
        return self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))


def _small_retinanet(cfg, num_classes: int, in_chans: int, img_size: int, width: int) -> nn.Module:
    """The embedded RetinaNet: ResNet-8 body (``width`` stem channels), 32-channel FPN on C3 (stride 8) and C4 (stride 16),
    P5/P6 from stride-2 convs on C4, GroupNorm head towers; two sizes x two aspect ratios of
    anchors per place, sized for digits 7-22 px tall (the finest level carries nearly all)."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    fpn = 32
    backbone = BackboneWithFPN(
        SmallResNetBody(in_chans, width),
        {"layer2": "0", "layer3": "1"},
        [2 * width, 4 * width],
        fpn,
        extra_blocks=LastLevelP6P7(4 * width, fpn),
    )
    anchors = AnchorGenerator(((12, 18), (24, 34), (44, 56), (64, 80)), ((1.0, 2.0),) * 4)
    mean, std = mean_std(in_chans)
    size = int(cfg.min_size or img_size)
    # GroupNorm head towers, as torchvision's RetinaNet v2: this small detector trains in minutes
    # with them and stalls without; BN cannot serve, its statistics would mix the pyramid levels
    head = RetinaNetHead(fpn, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 8))
    # at most 3 digits per canvas: 20 detections per image lose nothing and keep evaluation fast
    return RetinaNet(
        backbone,
        num_classes,
        min_size=size,
        max_size=size,
        image_mean=mean,
        image_std=std,
        anchor_generator=anchors,
        head=head,
        detections_per_img=20,
    )


@DET_ARCHS.register("small_retinanet_resnet8")
def small_retinanet_resnet8(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    return _small_retinanet(cfg, num_classes, in_chans, img_size, 16)


@DET_ARCHS.register("small_retinanet_resnet8_x0.5")
def small_retinanet_resnet8_x0_5(cfg, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """Half the body width (8/16/32 channels), the same FPN and head: DET's second size of one family."""
    return _small_retinanet(cfg, num_classes, in_chans, img_size, 8)
