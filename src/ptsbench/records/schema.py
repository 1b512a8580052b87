"""The run record's schema (docs/records.md): the machine-readable form, checked by ``validate_record``.

Top-level fields: schema_version, status ('ok'|'failed'), error ({type, message, phase} or null),
digest, name, created, choices (group -> option picked: Hydra's runtime choice, e.g. allocator:
fcpts_l2norm; also in the file name), overrides, config (resolved, each group's own knobs only),
not_applicable (knobs set for other options of a group, ignored: ``{"allocator.iters": 200}``), seed,
calibration {num_samples, seed, indices_digest, used}, model {name, arch, family, size, params,
weights_sha256}, task {name, metric, higher_is_better}, dense {metric: value}, sparse {metric: value}
(both absent when failed), sparsity {target, achieved, zeros, total, target_per_layer,
achieved_per_layer, excluded}, folded_bn, allocation {...}, masks {...}, reconstruction {...},
timing {phase: seconds, total}, memory {host_peak_mb, device_peak_mb}, env {...}.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

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
