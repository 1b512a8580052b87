"""The record of a run whose config was refused, so a sweep goes on and its summary and tables name
the case (a single run only prints the error and exits 2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..identity import config_digest, record_filename
from ..records import RunRecord, write_record
from .groups import digest_view
from .spec import group_choices, identity_of

log = logging.getLogger("ptsbench")


def record_config_failure(cfg: DictConfig, overrides: list[str] | None, error: Exception) -> Path | None:
    """A ``status: failed`` record with ``error.phase: config``; None when even that cannot be written."""
    try:
        config: Any
        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation that cannot resolve is part of the error
            config = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(config, dict)
        choices = group_choices(cfg)
        rate = OmegaConf.select(cfg, "sparsity.rate", default=None)
        try:  # the run's own digest (a user weight file's hash included): the sweep plan finds the record, and
            # the run, once its cause is fixed, replaces it
            identity = identity_of(cfg)
            digest, path, config = identity.digest, identity.record_path, identity.config
        except Exception:  # noqa: BLE001 - a config that cannot even be identified keeps the plain digest
            digest = config_digest(digest_view(config))
            rate_f = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else float("nan")
            path = Path(str(cfg.paths.records_dir)) / record_filename(choices, rate_f, digest)
        record = RunRecord.start(
            digest=digest,
            name=path.stem,
            choices=choices,
            config=config,
            overrides=overrides,
            seed=_int_or(cfg.get("seed"), 0),
            calib=(_select(cfg, "calib.num_samples"), _select(cfg, "calib.seed")),
            model={k: _select(cfg, f"model.{k}") for k in ("name", "arch", "family")}
            | {"size": str(_select(cfg, "model.size"))},
            task=(_select(cfg, "task.name"), _select(cfg, "task.metric")),
            rate=rate,
        )
        record.fail(error, "config", with_traceback=False)
        record.timing["total"] = 0.0
        return write_record(path, record.to_dict())
    except Exception as e:  # noqa: BLE001 - e.g. an unwritable records dir: the logged error must do
        log.warning("[record] could not record the config error (%s: %s)", type(e).__name__, e)
        return None


def _select(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def _int_or(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
