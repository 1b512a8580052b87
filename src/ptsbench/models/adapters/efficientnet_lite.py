"""EfficientNet-Lite adapter (family ``efficientnet_lite``): timm's ``EfficientNet`` built as
``tf_efficientnet_lite0|1|2`` (Tan & Le 2019; the Lite variant has no squeeze-excitation and uses ReLU6).

Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each block of ``blocks.<stage>.<j>``, a depthwise-separable block (depthwise 3x3, pointwise
  1x1) or an inverted residual (expand 1x1, depthwise kxk, linear 1x1 projection), its output after the
  residual add where the block has one. The stem conv, the head 1x1 conv and the classifier are outside
  blocks and become ``layer`` units.
- ``layer``: each conv with the norm after it (timm's fused ``BatchNormAct2d``, which BN folding leaves as
  its ReLU6, or as Identity after the linear projection): conv + activation; the classifier Linear.
- ``single``: every conv (BN folded) and the classifier, before any activation.
"""

from __future__ import annotations

from torch import nn

from .base import ADAPTERS, ModelAdapter, Unit, block_unit, unit_mode

# (conv, the norm-activation after it) inside each timm block type, in execution order
BLOCK_PARTS = {
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


def _chain(prefix: str, conv: str, norm: str, with_act: bool, kind: str) -> Unit:
    name = f"{prefix}{conv}"
    return Unit(name, (name, f"{prefix}{norm}") if with_act else (name,), (name,), kind)


@ADAPTERS.register("efficientnet_lite", label="EfficientNet-Lite", order=11)
class EfficientNetLiteAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        self.check_granularity(granularity)
        with_act, kind = unit_mode(granularity)
        units = [_chain("", "conv_stem", "bn1", with_act, kind)]
        for stage_name, stage in model.get_submodule("blocks").named_children():
            for block_name, block in stage.named_children():
                prefix = f"blocks.{stage_name}.{block_name}"
                parts = BLOCK_PARTS.get(type(block).__name__)
                if parts is None:
                    raise TypeError(
                        f"{prefix} is a {type(block).__name__}; the efficientnet_lite adapter knows "
                        f"{', '.join(BLOCK_PARTS)} (EfficientNet-Lite has no other block)"
                    )
                if granularity == "block":
                    units.append(block_unit(model, prefix))
                else:
                    units.extend(_chain(f"{prefix}.", conv, norm, with_act, kind) for conv, norm in parts)
        units.append(_chain("", "conv_head", "bn2", with_act, kind))
        units.append(Unit("classifier", ("classifier",), ("classifier",), kind))
        return units
