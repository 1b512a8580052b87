"""mmdet RetinaNet adapter (family ``mmdet_retinanet``): ``MMDetDetector`` around mmdet's
``RetinaNet`` (ResNet backbone, FPN neck, RetinaHead), model.source=mmdet.

mmdet builds its convs as ``ConvModule`` (``conv`` [+ ``bn``/``gn``] [+ ``activate``]) and its ResNet
with torchvision's attribute names (``conv1``/``bn1``/``relu``, ``layerN.i.convK``/``bnK``,
``downsample``), so the units match the torchvision RetinaNet adapter's, in execution order:
- backbone: the stem as a ``layer`` unit; at ``block`` granularity each BasicBlock/Bottleneck with
  its downsample, output after the residual add and the last ReLU; below it conv+bn(+relu) chains;
- FPN neck: the lateral 1x1 convs (mmdet computes all laterals first), then the 3x3 output convs,
  then the extra P6/P7 convs, each a ``layer`` unit (the neck merges levels by adds: no
  single-input block);
- RetinaHead: at ``block`` granularity the classification branch (``cls_convs`` then
  ``retina_cls``) and the regression branch (``reg_convs`` then ``retina_reg``) are one unit each,
  seeing the first pyramid level the shared towers run on; at ``layer`` granularity each tower
  ConvModule (conv [+ norm] + ReLU) and the two final convs; at ``single`` every conv alone.
"""

from __future__ import annotations

from torch import nn

from .base import ADAPTERS, ModelAdapter, Unit, unit_mode
from .retinanet import _body_units

PREFIX = "detector"


def conv_module_chain(model: nn.Module, name: str, with_act: bool) -> tuple[str, ...]:
    """Modules of the ConvModule at ``name`` in the order it applies them (mmdet's default order)."""
    mod = model.get_submodule(name)
    chain = [f"{name}.conv"]
    norm = getattr(mod, "norm_name", None) if getattr(mod, "with_norm", False) else None
    if norm:
        chain.append(f"{name}.{norm}")
    if with_act and getattr(mod, "with_activation", False):
        chain.append(f"{name}.activate")
    return tuple(chain)


def _fpn_units(model: nn.Module, prefix: str, kind: str) -> list[Unit]:
    neck = model.get_submodule(prefix)
    units = []
    for part in ("lateral_convs", "fpn_convs"):
        for i in range(len(getattr(neck, part))):
            chain = conv_module_chain(model, f"{prefix}.{part}.{i}", with_act=kind != "single")
            units.append(Unit(chain[0], chain, (chain[0],), kind))
    return units


def _head_units(model: nn.Module, prefix: str, granularity: str) -> list[Unit]:
    with_act, kind = unit_mode(granularity)
    head = model.get_submodule(prefix)
    units = []
    branches = (("cls_convs", "retina_cls"), ("reg_convs", "retina_reg"))
    if granularity == "block":
        for tower, final in branches:
            convs = tuple(f"{prefix}.{tower}.{i}" for i in range(len(getattr(head, tower))))
            modules = convs + (f"{prefix}.{final}",)
            layers = tuple(f"{c}.conv" for c in convs) + (f"{prefix}.{final}",)
            units.append(Unit(f"{prefix}.{tower}", modules, layers, "block"))
        return units
    for tower, _ in branches:
        for i in range(len(getattr(head, tower))):
            chain = conv_module_chain(model, f"{prefix}.{tower}.{i}", with_act)
            units.append(Unit(chain[0], chain, (chain[0],), kind))
    units.extend(
        Unit(f"{prefix}.{final}", (f"{prefix}.{final}",), (f"{prefix}.{final}",), kind) for _, final in branches
    )
    return units


@ADAPTERS.register("mmdet_retinanet")
class MMDetRetinaNetAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        _, kind = self.mode(granularity)
        return (
            _body_units(model, f"{PREFIX}.backbone", granularity)
            + _fpn_units(model, f"{PREFIX}.neck", kind)
            + _head_units(model, f"{PREFIX}.bbox_head", granularity)
        )
