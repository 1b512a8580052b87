"""SSD adapter (family ``ssd``): the SSD/SSDLite detectors of models/detection_ssd.py
(MobileNetV1-SSD, MobileNetV2-SSDLite and the embedded ``small_ssdlite_mobilenetv2``).

Their backbone is ``SSDStages``: stages run in turn, each ending in one feature map. Units
(docs/methods.md#reconstruction, paper §2.3.3), in execution order:
- backbone blocks: MobileNetV2 ``InvertedResidual`` (output after the residual add where there
  is one), MobileNetV1 depthwise-separable blocks, the remainder of the inverted residual that
  the SSDLite split cuts after its expansion layer, and every extra stage (1x1 conv + strided
  3x3 conv [+ 1x1 conv]) are ``block`` units; a lone Conv+BN+activation (stem, the expansion
  layer ending the first stage, MobileNetV2's last 1x1 conv) is a ``layer`` unit;
- heads, regression then classification as ``SSDHead.forward`` runs them, one predictor per
  feature map: an SSDLite predictor (depthwise 3x3 conv-BN-ReLU6 + 1x1 conv) is a ``block``,
  an SSD predictor (one 3x3 conv) a ``layer`` unit.
``layer`` granularity splits blocks into Conv+BN+activation chains, ``single`` into convs.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from ._chains import chain_unit, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit, block_unit, unit_mode


def _is_conv_norm_act(module: nn.Module) -> bool:
    from torchvision.ops.misc import Conv2dNormActivation

    return isinstance(module, Conv2dNormActivation)


def _chain_root(model: nn.Module, name: str) -> str:
    """The Sequential holding a block's layers (``InvertedResidual`` keeps them in ``.conv``)."""
    from torchvision.models.mobilenetv2 import InvertedResidual

    return f"{name}.conv" if isinstance(model.get_submodule(name), InvertedResidual) else name


def _module_units(model: nn.Module, name: str, granularity: str, is_block: bool) -> list[Unit]:
    with_act, kind = unit_mode(granularity)
    module = model.get_submodule(name)
    if isinstance(module, nn.Conv2d):
        return [chain_unit((name,), kind)]
    if is_block and granularity == "block":
        return [block_unit(model, name)]
    return [chain_unit(c, kind) for c in sequential_chains(model, _chain_root(model, name), with_act)]


def backbone_units(model: nn.Module, prefix: str, granularity: str) -> list[Unit]:
    units: list[Unit] = []
    for i, stage in enumerate(cast(nn.ModuleList, model.get_submodule(f"{prefix}.stages"))):
        stage_name = f"{prefix}.stages.{i}"
        children = list(stage.named_children())
        if all(_is_conv_norm_act(c) for _, c in children):  # an extra stage: one block
            units.extend(_module_units(model, stage_name, granularity, is_block=True))
            continue
        for child_name, child in children:
            name = f"{stage_name}.{child_name}"
            units.extend(_module_units(model, name, granularity, is_block=not _is_conv_norm_act(child)))
    return units


def head_units(model: nn.Module, prefix: str, granularity: str) -> list[Unit]:
    units: list[Unit] = []
    for head in ("regression_head", "classification_head"):
        predictors = cast(nn.ModuleList, model.get_submodule(f"{prefix}.{head}.module_list"))
        for i in range(len(predictors)):
            units.extend(_module_units(model, f"{prefix}.{head}.module_list.{i}", granularity, is_block=True))
    return units


@ADAPTERS.register("ssd", label="SSD", order=9)
class SSDAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        self.check_granularity(granularity)
        return backbone_units(model, "backbone", granularity) + head_units(model, "head", granularity)
