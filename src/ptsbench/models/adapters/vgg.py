"""VGG adapter (family ``vgg``): torchvision's ``VGG`` (Simonyan & Zisserman 2015), with or without
BatchNorm, and the CIFAR VGG-19 built on the same class.

VGG has no residual blocks. Its natural block is a conv stage: the Conv+BN+ReLU layers between
two max-pools, which share one spatial resolution and width (VGG-19: 2, 2, 4, 4, 4 convs).
Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each stage ``features[a:b]``, from its first conv to the ReLU before the pool (the
  parameter-free pool is left out, so the target keeps the stage's full resolution; the next
  stage receives the pooled tensor); the classifier Linears are ``layer`` units.
- ``layer``: every Conv+BN+ReLU in ``features``; classifier Linear+ReLU (the last alone).
- ``single``: every conv (BN folded) and Linear, before the activation.
"""

from __future__ import annotations

from torch import nn

from ...sparsity.layers import PRUNABLE_TYPES
from ._chains import chain_unit, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit


def conv_stages(model: nn.Module) -> list[tuple[str, ...]]:
    """Module names of each run of ``features`` children between pools (pools excluded)."""
    stages: list[list[str]] = [[]]
    for name, module in model.get_submodule("features").named_children():
        if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            stages.append([])
        else:
            stages[-1].append(f"features.{name}")
    return [tuple(s) for s in stages if s]


@ADAPTERS.register("vgg", label="VGG", order=5)
class VGGAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        with_act, kind = self.mode(granularity)
        if granularity == "block":
            units = []
            for stage in conv_stages(model):
                layers = tuple(n for n in stage if isinstance(model.get_submodule(n), PRUNABLE_TYPES))
                first, last = stage[0].split(".")[1], int(stage[-1].split(".")[1]) + 1
                units.append(Unit(f"features[{first}:{last}]", stage, layers, "block"))
        else:
            units = [chain_unit(c, kind) for c in sequential_chains(model, "features", with_act)]
        units.extend(chain_unit(c, kind) for c in sequential_chains(model, "classifier", with_act))
        return units
