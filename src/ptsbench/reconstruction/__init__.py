"""Reconstruction (track 2): model, masks, calibration -> model with pruned weights still zero.

A reconstructor is registered by name with its knobs' schema and called as
``fn(model, dense_model, masks, calib_inputs, config, device, adapter=..., task=..., sparsity=...) -> report``
where ``config`` is its typed knobs and ``report`` goes into the run record (per-unit losses
before/after, timings). One registered with the trait ``selects_masks`` (SparseGPT) chooses the masks
itself while it updates the weights: the pipeline runs it right after the mask phase. Each module of
this package registers its methods (imported on first lookup).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from ..schemas import Schema, knob

RECONSTRUCTORS: Registry = Registry("reconstruction", "reconstruction", plugins=__name__)


@dataclass(frozen=True)
class ReconstructionConfig(Schema):
    name: str = knob()


@RECONSTRUCTORS.register("none", config=ReconstructionConfig, label="None", order=0)
def no_reconstruction(model, dense_model, masks, calib_inputs, config, device, **_) -> dict:
    return {"name": "none"}
