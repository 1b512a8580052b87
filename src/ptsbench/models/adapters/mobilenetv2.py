"""MobileNetV2 adapter (family ``mobilenetv2``): torchvision's MobileNetV2 and the zoo's.

Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each ``InvertedResidual`` (expand 1x1, depthwise 3x3, linear 1x1 projection), its
  output after the residual add where the block has one; the stem conv, the final 1x1 conv and
  the classifier Linear are outside blocks and become ``layer`` units.
- ``layer``: every Conv+BN+ReLU6 (``Conv2dNormActivation``); the linear projection conv+BN
  (no activation, by design of the architecture); the classifier Linear.
- ``single``: every Conv+BN (BN folded) and the classifier Linear, before any activation.
"""

from __future__ import annotations

from torch import nn

from ._chains import chain_unit, features_classifier_units, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit


def _is_block(module: nn.Module) -> bool:
    from torchvision.models.mobilenetv2 import InvertedResidual

    return isinstance(module, InvertedResidual)


@ADAPTERS.register("mobilenetv2", label="MobileNetV2", order=2)
class MobileNetV2Adapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        self.check_granularity(granularity)

        def block_parts(prefix, block, with_act, kind):
            return [chain_unit(c, kind) for c in sequential_chains(model, f"{prefix}.conv", with_act)]

        return features_classifier_units(model, granularity, _is_block, block_parts)
