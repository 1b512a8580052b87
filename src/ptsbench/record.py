"""Run records (docs/records.md): one JSON per run, written atomically, keyed by a config digest.

Schema (``RECORD_SCHEMA`` below is the machine-readable form, checked by ``validate_record``):
  schema_version, status ('ok'|'failed'), error ({type, message, phase} or null), digest,
  name, created, choices (group -> option picked, Hydra's runtime choice: e.g. allocator: fcpts_l2norm,
  calib: default; also in the file name), overrides, config (resolved, each group's own knobs only),
  not_applicable (knobs set for other options of a group, ignored: ``{"allocator.iters": 200}``), seed,
  calibration {num_samples, seed, indices_digest}, model {name, arch, family, size, params},
  task {name, metric, higher_is_better}, dense {metric: value}, sparse {metric: value}
  (both absent when failed), sparsity {target, achieved, zeros, total, target_per_layer,
  achieved_per_layer, excluded}, allocation {...}, reconstruction {...},
  timing {phase: seconds, total}, memory {host_peak_mb, device_peak_mb}, env {...}.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Keys that change where/how a run executes but not its result.
NON_SEMANTIC_KEYS = ("paths", "device", "skip_finished", "hydra")

RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema_version",
        "status",
        "digest",
        "name",
        "created",
        "choices",
        "config",
        "seed",
        "calibration",
        "model",
        "task",
        "sparsity",
        "timing",
        "memory",
        "env",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "status": {"enum": ["ok", "failed"]},
        "error": {"type": ["object", "null"]},
        "digest": {"type": "string", "minLength": 16},
        "name": {"type": "string"},
        "choices": {"type": "object"},
        "overrides": {"type": "array"},
        "config": {"type": "object"},
        "seed": {"type": "integer"},
        "calibration": {"type": "object", "required": ["num_samples", "seed", "indices_digest"]},
        "model": {"type": "object", "required": ["name", "family", "size", "params"]},
        "task": {"type": "object", "required": ["name", "metric", "higher_is_better"]},
        "dense": {"type": "object"},
        "sparse": {"type": "object"},
        "sparsity": {"type": "object", "required": ["target"]},
        "timing": {"type": "object", "required": ["total"]},
        "memory": {"type": "object"},
        "env": {"type": "object"},
    },
}


def config_digest(cfg: dict) -> str:
    semantic = {k: v for k, v in cfg.items() if k not in NON_SEMANTIC_KEYS}
    blob = json.dumps(semantic, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def record_filename(choices: dict, rate: float, digest: str) -> str:
    parts = [choices.get(k, "?") for k in ("task", "model", "dataset", "allocator", "reconstruction")]
    return "-".join(str(p).replace("/", "_") for p in parts) + f"-s{rate:g}-{digest[:12]}.json"


def find_record(records_dir: str | Path, digest: str) -> Path | None:
    hits = sorted(Path(records_dir).glob(f"*-{digest[:12]}.json"))
    for p in hits:
        try:
            if json.loads(p.read_text()).get("digest") == digest:
                return p
        except (OSError, json.JSONDecodeError):
            continue
    return None


def load_finished(records_dir: str | Path, digest: str) -> dict | None:
    """The stored record for this digest if it finished `ok`, else None (failed runs re-run)."""
    path = find_record(records_dir, digest)
    if path is None:
        return None
    rec = json.loads(path.read_text())
    return rec if rec.get("status") == "ok" else None


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; records are shared like any file (group-readable)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def validate_record(rec: dict) -> None:
    """Raise ValueError when ``rec`` does not follow RECORD_SCHEMA (plus the ok/failed rule)."""
    import jsonschema

    try:
        jsonschema.validate(rec, RECORD_SCHEMA)
    except jsonschema.ValidationError as e:
        raise ValueError(f"run record does not match schema: {e.message}") from None
    if rec["status"] == "ok":
        for key in ("dense", "sparse"):
            if not rec.get(key):
                raise ValueError(f"an ok record needs '{key}' metrics")
    else:
        if not rec.get("error") or "sparse" in rec:
            raise ValueError("a failed record carries an error and no sparse metrics")
