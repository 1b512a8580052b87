"""Mask criteria (docs/methods.md#decisions): which weights a layer loses, given the count its allocator chose.

A criterion maps each layer to a score tensor shaped like its weight (low = pruned first); the
selection (sparsity/selection.py) keeps the count exact. Each module of this package registers one
in ``CRITERIA`` for ``sparsity.criterion`` (imported on first lookup), with its table label and the
trait ``needs_calibration`` when it reads activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...registry import Registry

if TYPE_CHECKING:
    from ..layers import PrunableLayer

CRITERIA: Registry[type[Criterion]] = Registry("mask criterion", "sparsity.criterion", plugins=__name__)


@dataclass
class ScoreContext:
    """Calibration access for criteria that read activations (Wanda)."""

    dense_model: nn.Module | None = None
    calib_inputs: torch.Tensor | None = None
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None
    device: torch.device = torch.device("cpu")
    chunk_size: int = 64
    report: dict[str, Any] = field(default_factory=dict)


class Criterion:
    def scores(self, modules: dict[str, PrunableLayer], context: ScoreContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError


__all__ = ["CRITERIA", "Criterion", "ScoreContext"]
