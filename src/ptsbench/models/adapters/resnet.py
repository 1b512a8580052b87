"""ResNet adapter (family ``resnet``): the zoo's CIFAR ResNets and torchvision ResNets.

Units (docs/methods.md#reconstruction, paper §2.3.3):
- ``block``: each BasicBlock/Bottleneck, downsample included, output after the residual add and
  the final ReLU; the stem (conv1+bn1+relu) and the classifier ``fc`` are ``layer`` units.
- ``layer``: conv+bn+relu inside a block where a ReLU follows directly; the last conv of a block
  (its ReLU comes after the add) and the downsample conv are conv+bn; ``fc`` alone.
- ``single``: every conv+bn (BN folded into the conv, so the Identity it left) and ``fc``.
Units are listed in execution order so ``input=sparse`` sees already-reconstructed predecessors.
"""

from __future__ import annotations

from torch import nn

from ._chains import attr_chain, chain_unit, sequential_chains
from .base import ADAPTERS, ModelAdapter, Unit, block_unit

STAGES = ("layer1", "layer2", "layer3", "layer4")


def _inner_act(block: nn.Module) -> str:
    # the zoo block has separate relu1/relu2; torchvision reuses one `relu` module
    return "relu1" if hasattr(block, "relu1") else "relu"


def _block_chains(model: nn.Module, prefix: str, with_act: bool) -> list[tuple[str, ...]]:
    block = model.get_submodule(prefix)
    convs = [i for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
    chains = []
    for i in convs:
        is_last = i == convs[-1]
        names = (f"conv{i}", f"bn{i}") + ((_inner_act(block),) if with_act and not is_last else ())
        chains.append(attr_chain(model, prefix, names))
    if getattr(block, "downsample", None) is not None:
        chains.extend(sequential_chains(model, f"{prefix}.downsample", with_act=False))
    return chains


def resnet_blocks(model: nn.Module) -> list[str]:
    return [f"{stage}.{i}" for stage in STAGES if hasattr(model, stage) for i in range(len(getattr(model, stage)))]


@ADAPTERS.register("resnet", label="ResNet", order=0)
class ResNetAdapter(ModelAdapter):
    def units(self, model: nn.Module, granularity: str) -> list[Unit]:
        with_act, kind = self.mode(granularity)
        units = [chain_unit(attr_chain(model, "", ("conv1", "bn1", "relu") if with_act else ("conv1", "bn1")), kind)]
        for block in resnet_blocks(model):
            if granularity == "block":
                units.append(block_unit(model, block))
            else:
                units.extend(chain_unit(c, kind) for c in _block_chains(model, block, with_act))
        units.append(chain_unit(("fc",), kind))
        return units
