"""Which layers are prunable (docs/methods.md#prunable-layers-and-masks) and BatchNorm folding.

Every Conv2d (grouped/depthwise included) and Linear weight is prunable, stem and classifier
included; biases, norms and embeddings stay dense. ``prune.exclude`` globs keep matching layers
dense; they still count in the global parameter total.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ..errors import ConfigError
from ..schemas import Schema, knob

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)
PrunableLayer = nn.Conv2d | nn.Linear


@dataclass(frozen=True)
class LayerInfo:
    """What an allocator may know of a layer: its name, weight shape and parameter count."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def prunable_modules(
    model: nn.Module, exclude: list[str] | tuple[str, ...] = (), skip: list[str] | tuple[str, ...] = ()
) -> dict[str, PrunableLayer]:
    """Conv2d/Linear modules by qualified name, minus ``exclude`` globs (user) and ``skip`` globs
    (adapter-declared dense parts, e.g. a diffusion time embedding).

    Raises ConfigError when an exclude glob matches no prunable layer (almost always a typo).
    """
    found = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)}
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in found):
            sample = ", ".join(list(found)[:8])
            raise ConfigError(
                f"prune.exclude: glob '{pattern}' matches no prunable layer; layer names look like: {sample}, ..."
            )
    dropped = tuple(exclude) + tuple(skip)
    return {n: m for n, m in found.items() if not any(fnmatch.fnmatchcase(n, p) for p in dropped)}


def layer_infos(modules: dict[str, PrunableLayer]) -> list[LayerInfo]:
    return [LayerInfo(n, tuple(m.weight.shape)) for n, m in modules.items()]


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module-name pairs where the BN consumes only that conv's output.

    Found with torch.fx so the real data flow decides, not module definition order. A model that
    does not trace as a whole (a detector: its pre/postprocessing has data-dependent control
    flow) is traced child by child, so its backbone blocks still fold; adjacent pairs inside an
    untraceable nn.Sequential are the last resort.
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return []  # nothing to fold (ViT, diffusion UNet): skip the tracing
    return _pairs_in(model, "")


def _traced_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """Pairs found by tracing ``module``; None when it does not trace."""
    try:
        import torch.fx as fx

        gm = _trace_keeping_norms(module)
    except Exception:  # noqa: BLE001 - the caller falls back to the module's children
        return None
    mods = dict(gm.named_modules())
    pairs: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(mods.get(src.target), nn.Conv2d)
            and len(src.users) == 1
        ):
            pairs.append((str(src.target), str(node.target)))  # a call_module target is the module's name
    return pairs


def _trace_keeping_norms(module: nn.Module):
    """fx-trace ``module`` with every BatchNorm2d a leaf, so a subclass that fuses its activation
    (timm's ``BatchNormAct2d``) still shows as one call after its conv."""
    import torch.fx as fx

    class NormLeafTracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, nn.BatchNorm2d) or super().is_leaf_module(m, qualname)

    return fx.GraphModule(module, NormLeafTracer().trace(module))


def _after_norm(bn: nn.Module) -> nn.Module:
    """What is left of a folded BN: Identity, or the dropout/activation a norm-act layer (timm's
    ``BatchNormAct2d``: norm -> drop -> act) applies after normalising."""
    rest = [
        m
        for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
        if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)
    ]
    return rest[0] if len(rest) == 1 else nn.Sequential(*rest) if rest else nn.Identity()


def _pairs_in(module: nn.Module, prefix: str) -> list[tuple[str, str]]:
    pre = f"{prefix}." if prefix else ""
    traced = _traced_pairs(module)
    if traced is not None:
        return [(pre + c, pre + b) for c, b in traced]
    kids = list(module.named_children())
    pairs = []
    if isinstance(module, nn.Sequential):
        for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
            if isinstance(m1, nn.Conv2d) and isinstance(m2, nn.BatchNorm2d):
                pairs.append((pre + n1, pre + n2))
    for name, child in kids:
        if not isinstance(child, (nn.Conv2d, nn.BatchNorm2d)):  # a lone layer holds no pair
            pairs.extend(_pairs_in(child, pre + name))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[tuple[str, str]]:
    """Fold each eval-mode BN into its conv in place (BN becomes Identity, or the activation of
    a fused norm-act layer); returns the pairs.

    Folding first means magnitudes, masks and reconstruction act on the deployed weights.
    """
    model.eval()
    pairs = find_conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv = cast(nn.Conv2d, model.get_submodule(conv_name))
        bn = cast(nn.BatchNorm2d, model.get_submodule(bn_name))
        running_mean, running_var = bn.running_mean, bn.running_var
        assert running_mean is not None and running_var is not None  # eval-mode BN keeps running statistics
        scale = bn.weight / torch.sqrt(running_var + bn.eps)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(running_mean)
        new_bias = (bias - running_mean) * scale + bn.bias
        conv.bias = nn.Parameter(new_bias.detach().clone())
        _set_submodule(model, bn_name, _after_norm(bn))
    return pairs


@dataclass(frozen=True)
class PruneConfig(Schema):
    """``prune.*``: which layers take part. ``adapter_dense``/``keep_dense`` came after the first records
    and stay out of the digest at their defaults."""

    exclude: list[str] = knob([])  # name globs kept dense (still counted in the global total)
    fold_bn: bool = knob(True)  # fold BatchNorm into the preceding conv before allocation
    adapter_dense: bool = knob(True, omit_at_default=True)  # keep the family adapter's dense_globs dense
    keep_dense: list[str] = knob([], omit_at_default=True)  # globs kept dense and out of the total
