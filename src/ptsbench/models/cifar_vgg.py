"""CIFAR VGG-19 (Simonyan & Zisserman 2015, configuration E with BatchNorm, for 32x32 inputs).

The 16 conv layers of torchvision's VGG-19-BN (64-64-M-128-128-M-256x4-M-512x4-M-512x4-M), then a
global average pool and the usual CIFAR head Linear(512, 512)-ReLU-Dropout-Linear(512, 512)-
ReLU-Dropout-Linear(512, classes) instead of the ImageNet head's 4096-wide layers on a 7x7 map.
Built on torchvision's ``VGG`` class, so module names (``features.*``, ``classifier.*``) and the
``vgg`` adapter are shared with the ImageNet model; registered as zoo architecture
``cifar_vgg19`` (``model.source: zoo``), like the CIFAR ResNets.
"""

from __future__ import annotations

from torch import nn

from .zoo import ZOO_ARCHS


@ZOO_ARCHS.register("cifar_vgg19")
def cifar_vgg19(num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    from torchvision.models.vgg import VGG, cfgs, make_layers

    features = make_layers(cfgs["E"], batch_norm=True)
    if in_chans != 3:
        features[0] = nn.Conv2d(in_chans, 64, kernel_size=3, padding=1)
    model = VGG(features, num_classes=num_classes, init_weights=True)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = nn.Sequential(
        nn.Linear(512, 512),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(512, 512),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(512, num_classes),
    )
    return model
