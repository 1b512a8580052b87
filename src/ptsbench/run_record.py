"""A run record's frame: the record before any phase ran (``status: failed`` until the last phase
ends), the peak memory it reports, and the one-line summary logged when it is done. The phases
that fill it are in ``ptsbench.pipeline``; docs/records.md describes every field.
"""

from __future__ import annotations

import logging
import resource
from datetime import datetime, timezone

import torch

from . import record as rec_io
from .env_info import env_record

log = logging.getLogger("ptsbench")


def peak_memory(device) -> dict:
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    dev = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"host_peak_mb": round(host, 1), "device_peak_mb": round(dev, 1)}


def new_record(cfg, cfg_dict, choices, digest, name, overrides, device) -> dict:
    """The record before any phase ran: what was asked for; ``status: failed`` until the last phase ends."""
    return {
        "schema_version": rec_io.SCHEMA_VERSION,
        "status": "failed",
        "error": None,
        "digest": digest,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "choices": choices,
        "overrides": list(overrides or []),
        "config": cfg_dict,
        "seed": int(cfg.seed),
        "calibration": {"num_samples": int(cfg.calib.num_samples), "seed": int(cfg.calib.seed), "indices_digest": None},
        "model": {
            "name": cfg.model.name,
            "arch": cfg.model.get("arch"),
            "family": cfg.model.get("family"),
            "size": str(cfg.model.get("size")),
            "params": None,
        },
        "task": {"name": cfg.task.name, "metric": cfg.task.metric, "higher_is_better": True},
        "sparsity": {"target": float(cfg.sparsity.rate)},
        "timing": {},
        "memory": {},
        "env": env_record(device),
    }


def log_summary(rec: dict) -> None:
    metric = rec["task"]["metric"]
    log.info(
        "[done] %-55s dense %s=%.4f sparse=%.4f achieved=%.4f (%.1fs)",
        rec["name"],
        metric,
        rec["dense"][metric],
        rec["sparse"][metric],
        rec["sparsity"]["achieved"],
        rec["timing"]["total"],
    )
