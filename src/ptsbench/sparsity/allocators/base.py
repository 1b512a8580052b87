"""Allocator interface: layer info (+ weights, + optional calibration context) -> {layer: rate}.

The rate an allocator receives is already the rate over the layers it is given (excluded
layers have been taken out of the budget by the caller), so every allocator satisfies
sum_l s_l * N_l = rate * sum_l N_l over its own layers. An allocator is constructed from its
typed, checked knobs (its schema, registered with it) and registered with the trait
``needs_calibration`` when it reads calibration data (then one run per calibration seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...registry import Registry
from ...schemas import Schema, build, knob
from ..layers import LayerInfo, PrunableLayer

ALLOCATORS: Registry[type[Allocator]] = Registry("allocator", "allocator", plugins="ptsbench.sparsity.allocators")


@dataclass
class AllocContext:
    """What learned allocators need beyond the weights: the model and calibration inputs."""

    model: nn.Module
    modules: dict[str, PrunableLayer]
    calib_inputs: torch.Tensor | None = None
    device: torch.device = torch.device("cpu")
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    # Filled by the allocator for the run record (traces, timings, init allocation...).
    report: dict[str, Any] = field(default_factory=dict)
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True)
class AllocatorConfig(Schema):
    """Knobs every allocator has; an allocator with more subclasses this next to its code."""

    name: str = knob()


class Allocator:
    def __init__(self, config: AllocatorConfig):
        self.config = config

    def allocate(
        self,
        layers: list[LayerInfo],
        weights: dict[str, torch.Tensor],
        rate: float,
        context: AllocContext | None = None,
    ) -> dict[str, float]:
        raise NotImplementedError


def build_allocator(name: str, **params: Any) -> Allocator:
    """The allocator ``name`` with ``params`` (its knobs without ``name``) checked against its schema."""
    entry = ALLOCATORS.entry(name)
    return entry.obj(build("allocator", ALLOCATORS.config(name), {"name": name, **params}))
