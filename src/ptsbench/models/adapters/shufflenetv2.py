"""ShuffleNetV2 adapter (family ``shufflenetv2``): torchvision's ``ShuffleNetV2`` (Ma et al. 2018).

A ShuffleNet unit (torchvision ``InvertedResidual``) either splits its input channels in two,
passes one half through and transforms the other (``branch2``: 1x1 conv, depthwise 3x3 conv,
1x1 conv), or, when it downsamples, transforms the whole input twice (``branch1``: depthwise
3x3, 1x1; and ``branch2``); the halves are concatenated and the channels shuffled.
Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each unit ``stage<k>.<i>``, split, concat and shuffle included (its output is the
  shuffled tensor the next unit receives); the stem ``conv1``, the last ``conv5`` and ``fc``
  are outside blocks and become ``layer`` units.
- ``layer``: every Conv+BN(+ReLU) inside the branches (the depthwise convs have no ReLU), in
  execution order (``branch1`` runs first), the stem, ``conv5`` and ``fc``.
- ``single``: every conv (BN folded) and ``fc``, before any activation.
"""

from __future__ import annotations

from torch import nn

from ._chains import chain_unit, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit, block_unit

STAGES = ("stage2", "stage3", "stage4")


@ADAPTERS.register("shufflenetv2", label="ShuffleNetV2", order=4)
class ShuffleNetV2Adapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        with_act, kind = self.mode(granularity)
        units = [chain_unit(c, kind) for c in sequential_chains(model, "conv1", with_act)]
        for stage in STAGES:
            for i in range(len(getattr(model, stage))):
                prefix = f"{stage}.{i}"
                if granularity == "block":
                    units.append(block_unit(model, prefix))
                    continue
                for branch in ("branch1", "branch2"):
                    units.extend(chain_unit(c, kind) for c in sequential_chains(model, f"{prefix}.{branch}", with_act))
        units.extend(chain_unit(c, kind) for c in sequential_chains(model, "conv5", with_act))
        units.append(chain_unit(("fc",), kind))
        return units
