"""ViT / DeiT adapter (families ``vit`` and ``deit``): timm ``VisionTransformer`` encoders.

Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each encoder block ``blocks.i`` (pre-norm attention + MLP, both residual adds),
  output after the second residual add; the patch embedding conv and the head Linear(s) are
  outside blocks and become ``layer`` units.
- ``layer``: inside a block, ``mlp.fc1`` with its activation (Linear+GELU); ``attn.qkv``,
  ``attn.proj`` and ``mlp.fc2`` have no activation after them, so they stand alone.
- ``single``: every Linear/Conv alone (fc1 before its GELU).
The LayerNorms, class token and position embedding stay dense and are not trained.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from ...sparsity.layers import PRUNABLE_TYPES
from .base import ADAPTERS, ModelAdapter, Unit, block_unit, prunable_in

ACT_AFTER = {"mlp.fc1": "mlp.act"}  # the only in-block Linear followed directly by an activation


def _outside_blocks(model: nn.Module) -> tuple[list[str], list[str]]:
    """Prunable layers before and after the ``blocks`` stack, in module (= execution) order."""
    before: list[str] = []
    after: list[str] = []
    seen_blocks = False
    for name, mod in model.named_modules():
        if name == "blocks" or name.startswith("blocks."):
            seen_blocks = True
        elif isinstance(mod, PRUNABLE_TYPES):
            (after if seen_blocks else before).append(name)
    return before, after


def _in_block_units(model: nn.Module, block: str, with_act: bool) -> list[Unit]:
    units = []
    for layer in prunable_in(model, block):
        local = layer[len(block) + 1 :]
        chain: tuple[str, ...] = (layer,)
        if with_act and local in ACT_AFTER and hasattr(model.get_submodule(block), "mlp"):
            chain = (layer, f"{block}.{ACT_AFTER[local]}")
        units.append(Unit(layer, chain, (layer,), "layer" if with_act else "single"))
    return units


@ADAPTERS.register("deit", label="DeiT", order=7)
@ADAPTERS.register("vit", label="ViT", order=6)
class ViTAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        with_act, kind = self.mode(granularity)
        before, after = _outside_blocks(model)
        units = [Unit(n, (n,), (n,), kind) for n in before]
        for i in range(len(cast(nn.Sequential, model.get_submodule("blocks")))):
            block = f"blocks.{i}"
            if granularity == "block":
                units.append(block_unit(model, block))
            else:
                units.extend(_in_block_units(model, block, with_act))
        units.extend(Unit(n, (n,), (n,), kind) for n in after)
        return units
