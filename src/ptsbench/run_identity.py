"""The digest that names a run (SPEC §7: a sweep re-run skips runs whose record is ``ok`` with the
same digest): the resolved config without the knobs that change where a run executes
(``record.NON_SEMANTIC_KEYS``) or only declare things (``DIGEST_IGNORED``), plus the content hash
of a user weight file (issue 12 item 1). ``record_identity`` gives a config's digest and record path.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import record as rec_io
from . import schemas
from .models import MODEL_SOURCES, weights_path
from .models.fingerprint import weights_sha256
from .validation import group_choices

# Declarations that select nothing a run computes: leaving them out keeps the digests (and so the
# skip-finished matching) of records written before they existed.
DIGEST_IGNORED = (("model", "tasks"), ("dataset", "tasks"))


def run_digest(cfg_dict: dict, weights_hash: str | None = None) -> str:
    """Config digest of a run; a user weight file's content hash enters it (the path alone does not
    tell a replaced file apart)."""
    view = {k: (dict(v) if isinstance(v, dict) else v) for k, v in cfg_dict.items()}
    for group, key in DIGEST_IGNORED:
        if isinstance(view.get(group), dict):
            view[group].pop(key, None)
    if weights_hash is not None:
        view["weights_sha256"] = weights_hash
    return rec_io.config_digest(view)


def weights_identity(cfg: DictConfig) -> tuple[str | None, bool]:
    """(SHA-256 of the weight file or folder, whether it is a user path) or (None, False) for random
    init. The zoo and library weights are named by the config; a user path is not, so only its hash
    enters the run digest (zoo and library runs keep their digests)."""
    weights = str(cfg.model.get("weights", "none"))
    if weights in ("none", "None"):
        return None, False
    if getattr(MODEL_SOURCES.get(cfg.model.get("source", "zoo")), "loads_weights", False):
        if weights in ("zoo", "torchvision", "timm"):
            return None, False  # the source reads its own fixed files
        path = Path(weights).expanduser()
    else:
        path = weights_path(cfg.model, cfg.dataset.name)
    if path is None or not path.exists():
        return None, False
    return weights_sha256(path, cfg.paths.get("cache_dir")), weights not in ("zoo", "torchvision", "timm")


def record_identity(cfg: DictConfig) -> tuple[dict, dict, str, Path]:
    """(resolved config, group choices, digest, record path) of the run ``cfg`` describes; the sweep
    plan (``ptsbench.sweep_report``) uses it to tell finished runs before they start."""
    choices = group_choices(cfg)
    cfg, _ = schemas.without_foreign(cfg)  # each group's own knobs; those of other options stay out
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    weights_hash, user_weights = weights_identity(cfg)
    digest = run_digest(schemas.digest_view(cfg_dict), weights_hash if user_weights else None)
    out_path = Path(cfg.paths.records_dir) / rec_io.record_filename(choices, float(cfg.sparsity.rate), digest)
    return cfg_dict, choices, digest, out_path
