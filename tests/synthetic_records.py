"""A hand-made CLS run record for the aggregation tests: the fields a real record has, a digest over its
config (so distinct settings are distinct runs), top-1 dense 1.0 and ``sparse`` for the sparse model."""

from __future__ import annotations

import hashlib
import json


def cls_record(
    model: str,
    sparse: float,
    *,
    sparsity: dict,
    allocator: str = "erk",
    recon: str = "none",
    size: str = "20",
    calib_seed: int = 0,
    achieved: float | None = None,
    timing: dict | None = None,
) -> dict:
    cfg = {
        "task": {"name": "cls", "metric": "top1"},
        "model": {"name": model, "family": "resnet", "size": size},
        "dataset": {"name": "ds"},
        "allocator": {"name": allocator},
        "reconstruction": {"name": recon},
        "sparsity": sparsity,
        "calib": {"num_samples": 128, "seed": calib_seed},
        "seed": 0,
    }
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:20]
    rate = sparsity["rate"]
    return {
        "schema_version": 1,
        "status": "ok",
        "error": None,
        "digest": digest,
        "name": f"{model}-{digest}",
        "created": "2026-01-01T00:00:00+00:00",
        "config": cfg,
        "seed": 0,
        "choices": {"task": "cls", "model": model, "dataset": "ds", "allocator": allocator, "reconstruction": recon},
        "calibration": {"num_samples": 128, "seed": calib_seed},
        "model": {"name": model, "family": "resnet", "size": size},
        "task": {"name": "cls", "metric": "top1", "higher_is_better": True},
        "sparsity": {"target": rate, "achieved": rate if achieved is None else achieved},
        "timing": timing or {"allocate": 0.5, "mask": 0.5, "reconstruct": 1.0, "total": 9.0},
        "memory": {"host_peak_mb": 100.0, "device_peak_mb": 0.0},
        "dense": {"top1": 1.0},
        "sparse": {"top1": sparse},
    }
