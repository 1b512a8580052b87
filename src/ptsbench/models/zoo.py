"""Embedded model zoo: small members of real families, sized for 28x28 single-channel digits.

- CIFAR-style ResNet-20/32/56 (He et al. 2016, §4.2: 3 stages of n basic blocks, 16/32/64
  channels; 1x1-conv shortcut when the shape changes).
- MobileNetV2 x0.5 / x1.0 built on torchvision's MobileNetV2 with a stride schedule for 28x28.
- ViT/DeiT-style encoders built on timm's VisionTransformer, patch 7 (4x4 tokens on 28x28),
  at two widths/depths.
Using the library classes means the adapters for the full-size models serve the zoo too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry

ZOO_ARCHS: Registry = Registry("zoo architecture", "model.arch")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; attribute names follow torchvision's ResNet."""

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        planes, layers = width, []
        in_planes = width
        for stage in range(3):
            stride = 1 if stage == 0 else 2
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
            planes *= 2
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(depth: int):
    def build(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        return CifarResNet(depth, num_classes, in_chans)

    return build


for _d in (20, 32, 56):
    ZOO_ARCHS.register(f"cifar_resnet{_d}")(cifar_resnet(_d))


def small_mobilenet_v2(width: float):
    # t, c, n, s: torchvision's table with fewer strides, so 28x28 ends at 4x4, not 1x1
    setting = [[1, 16, 1, 1], [6, 24, 2, 1], [6, 32, 2, 2], [6, 64, 2, 2], [6, 96, 1, 1]]

    def build(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        from torchvision.models import MobileNetV2

        m = MobileNetV2(num_classes=num_classes, width_mult=width, inverted_residual_setting=setting)
        stem = m.features[0][0]
        m.features[0][0] = nn.Conv2d(in_chans, stem.out_channels, 3, 1, 1, bias=False)
        return m

    return build


ZOO_ARCHS.register("small_mobilenetv2_x0.5")(small_mobilenet_v2(0.5))
ZOO_ARCHS.register("small_mobilenetv2_x1.0")(small_mobilenet_v2(1.0))


def small_vit(embed_dim: int, depth: int, heads: int, patch: int = 7):
    def build(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=img_size,
            patch_size=patch,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=2.0,
        )

    return build


ZOO_ARCHS.register("small_vit_d64")(small_vit(64, 4, 2))
ZOO_ARCHS.register("small_vit_d96")(small_vit(96, 6, 3))
