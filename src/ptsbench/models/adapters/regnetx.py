"""RegNetX adapter (family ``regnetx``): timm's ``RegNet`` (Radosavovic et al. 2020; X: no SE).

timm builds every conv as a ``ConvNormAct``: ``conv`` then ``bn``, a ``BatchNormAct2d`` that
normalises and applies the activation in one module. BN folding turns ``bn`` into what remains
of it: the activation (ReLU) or Identity (third conv, shortcut).
Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each residual ``Bottleneck`` ``s<i>.b<j>`` (1x1 conv, 3x3 group conv, 1x1 conv, 1x1
  shortcut conv where the shape changes), output after the residual add and the final ReLU;
  the stem conv and the classifier ``head.fc`` are outside blocks and become ``layer`` units.
- ``layer``: each ConvNormAct (conv + folded norm + its activation where it has one), and
  ``head.fc``.
- ``single``: each conv, with its norm only where that norm carries no activation (so the
  output is taken before the activation), and ``head.fc``.
Units are listed in execution order (the shortcut conv runs after the third conv in timm).
"""

from __future__ import annotations

from torch import nn

from .base import ADAPTERS, ModelAdapter, Unit, block_unit, prunable_in, single_units

BLOCK_CONVS = ("conv1", "conv2", "se", "conv3", "downsample")  # forward order of a Bottleneck


def applies_activation(norm: nn.Module) -> bool:
    """Whether the module after a conv activates: a norm-act layer with a non-Identity ``act``,
    or the activation a folded norm-act layer left behind."""
    if isinstance(norm, nn.Identity):
        return False
    if isinstance(norm, nn.BatchNorm2d):
        return not isinstance(getattr(norm, "act", nn.Identity()), nn.Identity)
    return True


def conv_norm_act(model: nn.Module, prefix: str, with_act: bool) -> Unit | None:
    """The unit of the ConvNormAct at ``prefix`` (None where it holds no conv)."""
    cna = model.get_submodule(prefix)
    if not isinstance(getattr(cna, "conv", None), nn.Conv2d):
        return None
    conv, norm = f"{prefix}.conv", getattr(cna, "bn", None)
    chain = (conv,) if norm is None or (not with_act and applies_activation(norm)) else (conv, f"{prefix}.bn")
    return Unit(conv, chain, (conv,), "layer" if with_act else "single")


def regnet_blocks(model: nn.Module) -> list[str]:
    from timm.models.regnet import RegStage

    return [
        f"{sname}.{bname}"
        for sname, stage in model.named_children()
        if isinstance(stage, RegStage)
        for bname, _ in stage.named_children()
    ]


@ADAPTERS.register("regnetx", label="RegNetX", order=1)
class RegNetXAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        with_act, kind = self.mode(granularity)
        units = [conv_norm_act(model, "stem", with_act)]
        for block in regnet_blocks(model):
            if granularity == "block":
                units.append(block_unit(model, block))
                continue
            for part in BLOCK_CONVS:
                prefix = f"{block}.{part}"
                if getattr(model.get_submodule(block), part, None) is None:
                    continue
                unit = conv_norm_act(model, prefix, with_act)
                if unit is not None:
                    units.append(unit)
                elif prunable_in(model, prefix):  # an SE module (RegNetY): its convs one by one
                    units.extend(single_units(model, list(prunable_in(model, prefix))))
        if isinstance(getattr(model, "final_conv", None), nn.Module):
            units.append(conv_norm_act(model, "final_conv", with_act))
        units.append(Unit("head.fc", ("head.fc",), ("head.fc",), kind))
        return [u for u in units if u is not None]
