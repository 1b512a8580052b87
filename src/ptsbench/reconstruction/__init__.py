"""Reconstruction (track 2): model, masks, calibration -> model with pruned weights still zero.

A reconstructor is registered by name and called as
``fn(model, dense_model, masks, calib_inputs, cfg, device, adapter=..., task=...) -> report`` where ``report`` goes
into the run record (per-unit losses before/after, timings).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry
from ..schemas import Schema, knob, register_group

RECONSTRUCTORS: Registry = Registry("reconstruction", "reconstruction")
# every reconstructor carries its knobs' schema as ``.config`` (a ptsbench.schemas.Schema dataclass)
register_group("reconstruction", "name", lambda: {n: RECONSTRUCTORS.get(n).config for n in RECONSTRUCTORS})


@dataclass
class NoReconstructionConfig(Schema):
    name: str = knob("none")


@RECONSTRUCTORS.register("none")
def no_reconstruction(model, dense_model, masks, calib_inputs, cfg, device, **_) -> dict:
    return {"name": "none"}


no_reconstruction.config = NoReconstructionConfig


# Reconstructors (single/layer/block, ...) register from submodules.
from ..autoload import import_submodules  # noqa: E402

import_submodules(__name__, __path__)
