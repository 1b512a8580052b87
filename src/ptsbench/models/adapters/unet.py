"""Diffusion UNet adapter (family ``unet``): the denoiser of DDPM / latent diffusion / Stable Diffusion.

Prunable layers are the UNet's Conv/Linear (the generation model registers only its UNet; the
autoencoder and text encoder are never prunable). The UNet's global time-embedding MLP (and
class/added-condition embeddings) stays dense by default (docs/methods.md#prunable-layers-and-masks: time embeddings are dense):
``dense_globs``; ``+prune.adapter_dense=false`` prunes them too (a knob left out of
conf/config.yaml so existing run digests stay valid).

Units (docs/methods.md#reconstruction), in the order the UNet first runs them:
- ``block``: every ResNet block (``ResnetBlock2D``, time-embedding projection included), every
  self-attention block of a UNet2DModel (``Attention``, residual inside) and every transformer
  block of a Stable Diffusion UNet (``BasicTransformerBlock``: self-attn, cross-attn, FF). ResNet
  and transformer blocks take a side input (time embedding / text states); their entries are
  packed so one captured tensor carries both (see ``_packed.py``). Layers outside any block
  (conv_in, down/upsampler convs, the transformer's proj_in/proj_out, conv_out) are units alone.
- ``layer`` and ``single``: every prunable layer alone (in diffusers UNets the activation comes
  *before* each conv, inside its block, so there is no conv+activation chain to fuse).
Units made only of dense-by-default layers are left out (they keep their dense weights).
"""

from __future__ import annotations

import fnmatch
from typing import Any, cast

import torch
from torch import nn

from ...sparsity.layers import PRUNABLE_TYPES
from .base import ADAPTERS, ModelAdapter, Unit, block_unit, prunable_in

BLOCK_TYPES = ("ResnetBlock2D", "BasicTransformerBlock", "Attention")


@torch.no_grad()
def execution_order(model: nn.Module, root: str = "unet") -> list[str]:
    """Names of ``root``'s submodules in the order of their first call on an example input."""
    order: list[str] = []
    seen: set[str] = set()
    handles = []
    for name, mod in model.get_submodule(root).named_modules():
        full = f"{root}.{name}" if name else root

        def first_call(_m, _args, full=full):
            if full not in seen:
                seen.add(full)
                order.append(full)

        handles.append(mod.register_forward_pre_hook(first_call))
    try:
        model(cast(Any, model).example_input(1))  # the generation wrapper's (models/diffusion.py)
    finally:
        for h in handles:
            h.remove()
    return order


def _is_block(model: nn.Module, name: str, blocks: list[str]) -> bool:
    mod = model.get_submodule(name)
    kind = type(mod).__name__
    if kind not in BLOCK_TYPES:
        return False
    # an Attention inside a transformer block belongs to that block
    return kind != "Attention" or not any(name.startswith(b + ".") for b in blocks)


@ADAPTERS.register("unet", label="UNet", order=10)
class UNetAdapter(ModelAdapter):
    dense_globs = ("unet.time_embedding.*", "unet.class_embedding*", "unet.add_embedding.*")

    def _is_dense(self, layer: str) -> bool:
        return any(fnmatch.fnmatchcase(layer, g) for g in self.dense_globs)

    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        _, kind = self.mode(granularity)
        order = execution_order(model)
        layers = [n for n in order if isinstance(model.get_submodule(n), PRUNABLE_TYPES)]
        if granularity != "block":
            return [Unit(n, (n,), (n,), kind) for n in layers if not self._is_dense(n)]
        blocks: list[str] = []
        for name in order:
            if not any(name.startswith(b + ".") for b in blocks) and _is_block(model, name, blocks):
                blocks.append(name)
        owner = {layer: b for b in blocks for layer in prunable_in(model, b)}
        units, emitted = [], set()
        for layer in layers:
            if layer in owner:
                b = owner[layer]
                if b not in emitted:
                    emitted.add(b)
                    units.append(block_unit(model, b))
            elif not self._is_dense(layer):
                units.append(Unit(layer, (layer,), (layer,), "layer"))
        return units
