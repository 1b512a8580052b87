"""Helpers shared by adapters: turn a container of Conv/Norm/Act modules into unit chains.

A prunable layer opens a chain; the norm that follows it (a BatchNorm, or the ``Identity`` left
behind by BN folding) joins it; at ``layer`` granularity the activation after that joins too
(the paper's CONV-BN-ReLU pattern); at ``single`` granularity the chain stops before the
activation. Nested ``nn.Sequential`` containers (torchvision's ``Conv2dNormActivation``) are
flattened, so ``features.1.conv.0.0`` and ``features.1.conv.0.2`` land in one chain.
"""

from __future__ import annotations

from torch import nn

from ...sparsity.layers import PRUNABLE_TYPES
from .base import Unit, block_unit, unit_mode

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity)
ACT_TYPES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.Hardtanh,
    nn.Tanh,
    nn.Mish,
)


def sequential_leaves(model: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Leaf modules of a (nested) ``nn.Sequential`` in execution order, with qualified names."""
    seq = model.get_submodule(prefix)
    out: list[tuple[str, nn.Module]] = []
    for child_name, child in seq.named_children():
        name = f"{prefix}.{child_name}"
        if isinstance(child, nn.Sequential):
            out.extend(sequential_leaves(model, name))
        else:
            out.append((name, child))
    return out


def sequential_chains(model: nn.Module, prefix: str, with_act: bool) -> list[tuple[str, ...]]:
    """Chains (prunable layer [+ norm] [+ activation]) inside the Sequential at ``prefix``."""
    chains: list[list[str]] = []
    open_chain: list[str] | None = None
    has_act = False
    for name, mod in sequential_leaves(model, prefix):
        if isinstance(mod, PRUNABLE_TYPES):
            open_chain, has_act = [name], False
            chains.append(open_chain)
        elif open_chain is not None and not has_act and isinstance(mod, NORM_TYPES):
            open_chain.append(name)
        elif open_chain is not None and not has_act and with_act and isinstance(mod, ACT_TYPES):
            open_chain.append(name)
            has_act = True
        else:
            open_chain = None
    return [tuple(c) for c in chains]


def chain_unit(chain: tuple[str, ...], kind: str) -> Unit:
    """A unit named after its prunable layer (the chain's first module)."""
    return Unit(chain[0], tuple(chain), (chain[0],), kind)


def attr_chain(model: nn.Module, prefix: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Qualified names of the attributes ``names`` of the module at ``prefix`` that exist."""
    parent = model.get_submodule(prefix) if prefix else model
    pre = f"{prefix}." if prefix else ""
    return tuple(pre + n for n in names if getattr(parent, n, None) is not None)


def features_classifier_units(model: nn.Module, granularity: str, is_block, block_parts) -> list[Unit]:
    """Units of a torchvision ``features`` + ``classifier`` network (MobileNetV2/V3): the
    children of ``features`` that ``is_block`` are whole units at ``block`` granularity and
    ``block_parts(prefix, child, with_act, kind)`` below it; the other children and the
    classifier are conv/linear chains."""
    with_act, kind = unit_mode(granularity)
    units: list[Unit] = []
    for child_name, child in model.get_submodule("features").named_children():
        prefix = f"features.{child_name}"
        if not is_block(child):
            units.extend(chain_unit(c, kind) for c in sequential_chains(model, prefix, with_act))
        elif granularity == "block":
            units.append(block_unit(model, prefix))
        else:
            units.extend(block_parts(prefix, child, with_act, kind))
    units.extend(chain_unit(c, kind) for c in sequential_chains(model, "classifier", with_act))
    return units
