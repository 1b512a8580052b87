"""The run record as a type: one constructor for ok, failed and config-failure records.

``RunRecord.start`` makes the record before any phase ran (``status: failed`` until the last phase
ends); the pipeline's phases fill its sections; ``fail`` notes an error; ``to_dict`` is what is
written (docs/records.md, ``records.schema``). A config failure is the same record, started from
what the refused config says and failed in the phase ``config``.
"""

from __future__ import annotations

import logging
import resource
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .schema import SCHEMA_VERSION

log = logging.getLogger("ptsbench")
SECTIONS = (
    "not_applicable",
    "data",
    "dense",
    "folded_bn",
    "allocation",
    "masks",
    "reconstruction",
    "sparse",
    "size_bytes",
    "flops",
    "saved_model",
    "latency",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    digest: str
    name: str
    choices: dict[str, str]
    config: dict[str, Any]
    seed: int
    calibration: dict[str, Any]
    model: dict[str, Any]
    task: dict[str, Any]
    sparsity: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    status: str = "failed"
    error: dict[str, Any] | None = None
    created: str = field(default_factory=_now)
    timing: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)
    # filled by the phases (a section left None is not written)
    not_applicable: dict[str, Any] | None = None
    data: dict[str, str | None] | None = None  # a file-backed dataset's content digests (eval split, all read)
    dense: dict[str, Any] | None = None
    folded_bn: int | None = None
    allocation: dict[str, Any] | None = None
    masks: dict[str, Any] | None = None
    reconstruction: dict[str, Any] | None = None
    sparse: dict[str, Any] | None = None
    size_bytes: dict[str, int] | None = None  # the pruned model as a plain state dict and as a sparse checkpoint
    flops: dict[str, Any] | None = None  # theoretical multiply-accumulates, dense and non-zero
    saved_model: str | None = None  # the sparse checkpoint beside the record (save.model=true)
    latency: dict[str, Any] | None = None  # measured dense vs sparse inference (eval.latency=true)

    @classmethod
    def start(
        cls,
        *,
        digest: str,
        name: str,
        choices: dict[str, str],
        config: dict[str, Any],
        overrides: list[str] | None,
        seed: int,
        calib: tuple[Any, Any],
        model: dict[str, Any],
        task: tuple[Any, Any],
        rate: Any,
        env: dict[str, Any] | None = None,
    ) -> RunRecord:
        """The record before any phase ran: what was asked for. ``calib``: (num_samples, seed);
        ``model``: name, arch, family, size; ``task``: (name, metric)."""
        return cls(
            digest=digest,
            name=name,
            choices=choices,
            config=config,
            overrides=list(overrides or []),
            seed=seed,
            calibration={"num_samples": calib[0], "seed": calib[1], "indices_digest": None},
            model={**model, "params": None},
            task={"name": task[0], "metric": task[1], "higher_is_better": True},
            sparsity={"target": rate},
            env=env or {},
        )

    def fail(self, error: BaseException, phase: str | None, with_traceback: bool = True) -> None:
        """Note ``error`` (raised in ``phase``); a failed record carries no metrics."""
        self.status = "failed"
        self.error = {"type": type(error).__name__, "message": str(error), "phase": phase}
        if with_traceback:
            self.error["traceback"] = traceback.format_exc(limit=8)
        self.dense = self.sparse = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "error": self.error,
            "digest": self.digest,
            "name": self.name,
            "created": self.created,
            "choices": self.choices,
            "overrides": self.overrides,
            "config": self.config,
            "seed": self.seed,
            "calibration": self.calibration,
            "model": self.model,
            "task": self.task,
            "sparsity": self.sparsity,
            "timing": self.timing,
            "memory": self.memory,
            "env": self.env,
        }
        out.update({k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None})
        return out

    def log_summary(self) -> None:
        metric = self.task["metric"]
        log.info(
            "[done] %-55s dense %s=%.4f sparse=%.4f achieved=%.4f (%.1fs)",
            self.name,
            metric,
            self.dense[metric] if self.dense else float("nan"),
            self.sparse[metric] if self.sparse else float("nan"),
            self.sparsity.get("achieved", float("nan")),
            self.timing.get("total", float("nan")),
        )


def peak_memory(device) -> dict:
    import torch

    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    dev = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    return {"host_peak_mb": round(host, 1), "device_peak_mb": round(dev, 1)}
