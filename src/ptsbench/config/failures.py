"""The record of a run whose config was refused, so a sweep goes on and its summary and tables name
the case (a single run only prints the error and exits 2)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..file_names import expand_path
from ..identity import config_digest, record_filename
from ..records import RunRecord, write_record
from .groups import digest_view
from .spec import group_choices, identity_of

log = logging.getLogger("ptsbench")


def record_config_failure(cfg: DictConfig, overrides: list[str] | None, error: Exception) -> Path | None:
    """A ``status: failed`` record with ``error.phase: config``; None when even that cannot be written."""
    try:
        choices = group_choices(cfg)
        rate = OmegaConf.select(cfg, "sparsity.rate", default=None)
        digest, path, config = failure_identity(cfg)
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


def failure_identity(cfg: DictConfig) -> tuple[str, Path, dict]:
    """(digest, record path, recorded config) of a refused run: the run's own identity (a user weight file's
    hash included) so the sweep plan finds the record and the run, once its cause is fixed, replaces it; a
    config that cannot even be identified keeps the digest of its plain config."""
    try:
        identity = identity_of(cfg)
        return identity.digest, identity.record_path, identity.config
    except Exception:  # noqa: BLE001 - the refusal itself is what the record reports
        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation that cannot resolve is part of the error
            config = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(config, dict)
        digest = config_digest(digest_view(config))
        rate = OmegaConf.select(cfg, "sparsity.rate", default=None)
        rate_f = float(rate) if isinstance(rate, (int, float)) and not isinstance(rate, bool) else float("nan")
        return digest, expand_path(cfg.paths.records_dir) / record_filename(group_choices(cfg), rate_f, digest), config


def _select(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


def _int_or(value, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
