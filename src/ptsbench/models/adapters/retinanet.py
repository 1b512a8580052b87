"""RetinaNet adapter (family ``retinanet``): torchvision's RetinaNet with a ResNet-FPN backbone
(RetinaNet-R18/R50 and the embedded ``small_retinanet_resnet8``).

Units (docs/methods.md#reconstruction, paper §2.3.3), in execution order, so ``input=sparse`` sees reconstructed predecessors:
- backbone body: the ResNet units of the ResNet adapter (stem as a layer unit; at ``block``
  granularity each BasicBlock/Bottleneck with its downsample, after the add and the last ReLU);
- FPN neck: every lateral 1x1 conv and output 3x3 conv, in the order the top-down pass runs
  them (coarsest level first), then P6 and P7. The neck merges levels by adds, so it has no
  single-input block: its convs are ``layer`` units at ``block`` granularity, like a stem;
- heads: at ``block`` granularity each head (classification, regression) is one unit, its
  4-conv tower and its final conv; at ``layer`` granularity each conv[+norm]+ReLU of the tower
  (torchvision's v1 head has no norm, v2 and the embedded one GroupNorm, which stays unfolded)
  and the final conv; at ``single`` every conv alone.
The towers are shared by all pyramid levels; a unit sees the first level the head runs on
(the finest, about 3/4 of all anchor positions), which is what its calibration input captures.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from ._chains import attr_chain, chain_unit, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit, block_unit, prunable_in, unit_mode
from .resnet import _block_chains, resnet_blocks

HEADS = (("classification_head", "cls_logits"), ("regression_head", "bbox_reg"))


def _body_units(model: nn.Module, prefix: str, granularity: str) -> list[Unit]:
    with_act, kind = unit_mode(granularity)
    units = [chain_unit(attr_chain(model, prefix, ("conv1", "bn1", "relu") if with_act else ("conv1", "bn1")), kind)]
    body = model.get_submodule(prefix)
    for block in resnet_blocks(body):
        name = f"{prefix}.{block}"
        if granularity == "block":
            units.append(block_unit(model, name))
        else:
            units.extend(chain_unit(c, kind) for c in _block_chains(model, name, with_act))
    return units


def _fpn_units(model: nn.Module, prefix: str, kind: str) -> list[Unit]:
    fpn = model.get_submodule(prefix)
    inner_blocks = cast(nn.ModuleList, fpn.get_submodule("inner_blocks"))
    units: list[Unit] = []
    for i in reversed(range(len(inner_blocks))):
        for part in ("inner_blocks", "layer_blocks"):
            units.extend(chain_unit(c, kind) for c in sequential_chains(model, f"{prefix}.{part}.{i}", with_act=False))
    extra = getattr(fpn, "extra_blocks", None)
    for conv in ("p6", "p7"):
        if isinstance(getattr(extra, conv, None), nn.Conv2d):
            units.append(chain_unit((f"{prefix}.extra_blocks.{conv}",), kind))
    return units


def head_units(model: nn.Module, prefix: str, granularity: str) -> list[Unit]:
    """Units of RetinaNet's two head towers (``prefix`` = the RetinaNetHead)."""
    with_act, kind = unit_mode(granularity)
    units: list[Unit] = []
    for head, final in HEADS:
        tower, last = f"{prefix}.{head}.conv", f"{prefix}.{head}.{final}"
        if granularity == "block":
            name = f"{prefix}.{head}"
            units.append(Unit(name, (tower, last), prunable_in(model, tower) + (last,), "block"))
        else:
            for i, layer in enumerate(cast(nn.Sequential, model.get_submodule(tower))):
                # Conv2dNormActivation: conv [+ norm] + ReLU; a GroupNorm (RetinaNet v2) cannot
                # be folded, so a ``layer`` unit keeps it, a ``single`` unit ends before it
                parts = [f"{tower}.{i}.{n}" for n, _ in layer.named_children()]
                units.append(chain_unit(tuple(parts) if with_act else (parts[0],), kind))
            units.append(chain_unit((last,), kind))
    return units


@ADAPTERS.register("retinanet", label="RetinaNet", order=8)
class RetinaNetAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        _, kind = self.mode(granularity)
        return (
            _body_units(model, "backbone.body", granularity)
            + _fpn_units(model, "backbone.fpn", kind)
            + head_units(model, "head", granularity)
        )
