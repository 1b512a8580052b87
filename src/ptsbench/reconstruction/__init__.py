"""Reconstruction (track 2): model, masks, calibration -> model with pruned weights still zero.

A reconstructor is registered by name and called as
``fn(model, dense_model, masks, calib_inputs, cfg, device, adapter=..., task=...) -> report`` where ``report`` goes
into the run record (per-unit losses before/after, timings).
"""
from __future__ import annotations

from ..registry import Registry

RECONSTRUCTORS: Registry = Registry("reconstruction", "reconstruction")


@RECONSTRUCTORS.register("none")
def no_reconstruction(model, dense_model, masks, calib_inputs, cfg, device, **_) -> dict:
    return {"name": "none"}


# Reconstructors (single/layer/block, ...) register from submodules.
from ..autoload import import_submodules  # noqa: E402

import_submodules(__name__, __path__)
