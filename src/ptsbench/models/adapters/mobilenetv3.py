"""MobileNetV3 adapter (family ``mobilenetv3``): torchvision's ``MobileNetV3`` (Howard et al. 2019),
any ``width_mult``.

Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each ``InvertedResidual`` (1x1 expansion, depthwise conv, squeeze-and-excitation
  where present, linear 1x1 projection), its output after the residual add where the block has
  one; the SE lives inside the block. The stem conv, the last 1x1 conv and the classifier
  Linears are outside blocks and become ``layer`` units.
- ``layer``: every Conv+BN+activation (``Conv2dNormActivation``; the projection has no
  activation); inside an SE, ``fc1`` + ReLU and ``fc2`` + hard-sigmoid (each unit sees the input
  its conv receives, the pooled features); classifier Linear (+ Hardswish).
- ``single``: every conv (BN folded) and Linear, before any activation.
"""

from __future__ import annotations

from torch import nn

from ._chains import chain_unit, features_classifier_units, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit


def se_units(prefix: str, with_act: bool) -> list[Unit]:
    """torchvision ``SqueezeExcitation``: scale = hardsigmoid(fc2(relu(fc1(avgpool(x)))))."""
    pairs = ((f"{prefix}.fc1", f"{prefix}.activation"), (f"{prefix}.fc2", f"{prefix}.scale_activation"))
    kind = "layer" if with_act else "single"
    return [Unit(conv, (conv, act) if with_act else (conv,), (conv,), kind) for conv, act in pairs]


@ADAPTERS.register("mobilenetv3", label="MobileNetV3", order=3)
class MobileNetV3Adapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        from torchvision.models.mobilenetv3 import InvertedResidual
        from torchvision.ops.misc import SqueezeExcitation

        self.check_granularity(granularity)

        def block_parts(prefix, block, with_act, kind):
            units: list[Unit] = []
            for part_name, part in block.block.named_children():
                part_prefix = f"{prefix}.block.{part_name}"
                if isinstance(part, SqueezeExcitation):
                    units.extend(se_units(part_prefix, with_act))
                else:
                    units.extend(chain_unit(c, kind) for c in sequential_chains(model, part_prefix, with_act))
            return units

        return features_classifier_units(model, granularity, lambda m: isinstance(m, InvertedResidual), block_parts)
