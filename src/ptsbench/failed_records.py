"""Failed run records that keep every result true and every case visible (issue 12 items 6, 7).

- A failure never replaces an ``ok`` record of the same config (e.g. a re-run with another
  ``device``, which is outside the digest): it is written beside it as ``<name>.failed.json``.
- In a multirun, a job whose config is refused writes a ``status: failed`` record with
  ``error.phase: config`` and the message, so the sweep goes on and its summary and tables
  name the case; a single run still only prints the error and exits 2.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import record as rec_io
from .run_identity import record_identity, run_digest
from .schemas import digest_view

log = logging.getLogger("ptsbench")


def write_record(out_path: Path, record: dict) -> Path:
    """Write ``record``; a failure never replaces an ``ok`` record (e.g. a re-run with another
    ``device``, which is outside the digest): it goes beside it as ``<name>.failed.json``."""
    if record["status"] != "ok" and out_path.exists():
        try:
            if json.loads(out_path.read_text()).get("status") == "ok":
                out_path = out_path.with_name(f"{out_path.stem}.failed.json")
        except (OSError, ValueError):
            pass  # unreadable: replacing it loses nothing
    rec_io.write_json_atomic(out_path, record)
    log.info("[record] %s: %s", record["status"], out_path)
    return out_path


def record_config_failure(
    cfg: DictConfig, overrides: list[str] | None, error: Exception, choices_of: Callable[[DictConfig], dict]
) -> Path | None:
    """A multirun job whose config is refused leaves a ``status: failed`` record (``phase: config``)
    so the sweep can go on and its summary and tables show the case; None when even that fails."""
    try:
        try:
            cfg_dict = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation that cannot resolve is part of the error
            cfg_dict = OmegaConf.to_container(cfg, resolve=False)
        choices = choices_of(cfg)
        digest = run_digest(digest_view(cfg_dict))
        rate = OmegaConf.select(cfg, "sparsity.rate", default=None)
        rate_f = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else float("nan")
        out_path = Path(str(cfg.paths.records_dir)) / rec_io.record_filename(choices, rate_f, digest)
        try:  # the digest the sweep plan expects (a user weight file's hash included), so its summary finds it
            _, _, digest, out_path = record_identity(cfg)
        except Exception:  # noqa: BLE001 - a config that cannot even be identified keeps the plain digest
            pass
        record = {
            "schema_version": rec_io.SCHEMA_VERSION,
            "status": "failed",
            "digest": digest,
            "name": out_path.stem,
            "error": {"type": type(error).__name__, "message": str(error), "phase": "config"},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "choices": choices,
            "overrides": list(overrides or []),
            "config": cfg_dict,
            "seed": _int_or(cfg.get("seed"), 0),
            "calibration": {
                "num_samples": OmegaConf.select(cfg, "calib.num_samples", default=None),
                "seed": OmegaConf.select(cfg, "calib.seed", default=None),
                "indices_digest": None,
            },
            "model": {
                "name": OmegaConf.select(cfg, "model.name", default=None),
                "arch": OmegaConf.select(cfg, "model.arch", default=None),
                "family": OmegaConf.select(cfg, "model.family", default=None),
                "size": str(OmegaConf.select(cfg, "model.size", default=None)),
                "params": None,
            },
            "task": {
                "name": OmegaConf.select(cfg, "task.name", default=None),
                "metric": OmegaConf.select(cfg, "task.metric", default=None, throw_on_resolution_failure=False),
                "higher_is_better": True,
            },
            "sparsity": {"target": rate},
            "timing": {"total": 0.0},
            "memory": {},
            "env": {},
        }
        return write_record(out_path, record)
    except Exception as e:  # noqa: BLE001 - e.g. an unwritable records dir: the logged error must do
        log.warning("[record] could not record the config error (%s: %s)", type(e).__name__, e)
        return None


def _int_or(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
