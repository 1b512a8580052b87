"""Allocator interface: layer info (+ weights, + optional calibration context) -> {layer: rate}.

The rate an allocator receives is already the rate over the layers it is given (excluded
layers have been taken out of the budget by the caller), so every allocator satisfies
sum_l s_l * N_l = rate * sum_l N_l over its own layers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...registry import Registry
from ..layers import LayerInfo

ALLOCATORS: Registry[type[Allocator]] = Registry("allocator", "allocator")


@dataclass
class AllocContext:
    """What learned allocators need beyond the weights: the model and calibration inputs."""

    model: nn.Module
    modules: dict[str, nn.Module]
    calib_inputs: torch.Tensor | None = None
    device: torch.device = torch.device("cpu")
    seed: int = 0
    extras: dict[str, Any] = field(default_factory=dict)
    # Filled by the allocator for the run record (traces, timings, init allocation...).
    report: dict[str, Any] = field(default_factory=dict)
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


class Allocator:
    name = "base"
    needs_calibration = False

    def __init__(self, **params: Any):
        self.params = params

    def allocate(self, layers: list[LayerInfo], weights: dict[str, torch.Tensor], rate: float,
                 context: AllocContext | None = None) -> dict[str, float]:
        raise NotImplementedError


def build_allocator(name: str, **params: Any) -> Allocator:
    return ALLOCATORS.get(name)(**params)
