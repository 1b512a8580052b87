"""What names a run, and what does not change its result.

``NEUTRAL`` is the one list of knobs that change no result, each with its reason. Every other knob
can change a score, so it separates table cells (``eval.*`` and ``dataset.*`` included) and enters
the run's digest. An entry names a knob, or a whole subtree when it ends with ``.``. ``in_digest``:
the knob still enters the config digest, so that the records written before it was known to be
neutral keep their names (a re-run finds them and skips).

The digest (:func:`config_digest`) is the SHA-256 of the resolved config without the knobs left out
of it, plus the content hash of a user's weight file and of a file-backed dataset's files (a path alone
does not tell a replaced file apart); a record is named by its group choices, rate and digest (:func:`record_filename`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .file_names import safe_name


@dataclass(frozen=True)
class Neutral:
    knob: str  # a dotted knob, or a subtree ending in "."
    why: str
    in_digest: bool = False


NEUTRAL: tuple[Neutral, ...] = (
    Neutral("paths.", "where records, caches and run folders are written"),
    Neutral("hydra.", "Hydra's own settings: launcher, run and sweep folders, logging"),
    Neutral("device", "where a run executes; the same computation up to float rounding on every device"),
    Neutral("skip_finished", "whether a finished run is skipped, not what a run computes"),
    Neutral("model.tasks", "declares the tasks a model serves; checked before a run, never computed with"),
    Neutral("dataset.tasks", "declares the tasks a dataset serves; checked before a run, never computed with"),
    Neutral("reconstruction.progress", "a progress bar on the terminal", in_digest=True),
    Neutral(
        "eval.dense_cache", "whether the dense score is read from the cache; the score is the same", in_digest=True
    ),
    # in the digest when set, so that a finished run re-run with save.model=true runs again and writes it
    Neutral("save.model", "whether the pruned model is also written beside the record", in_digest=True),
    Neutral("eval.latency", "whether the pruned model is also timed; the scores are the same", in_digest=True),
    Neutral("eval.latency_batch_size", "the batch the timing uses; the scores are the same", in_digest=True),
    Neutral("eval.latency_repeats", "how often the timing repeats; the scores are the same", in_digest=True),
)


def is_neutral(knob: str) -> bool:
    """Whether the dotted ``knob`` (``reconstruction.progress``, ``paths.records_dir``) changes no result."""
    return any(knob == n.knob or (n.knob.endswith(".") and knob.startswith(n.knob)) for n in NEUTRAL)


def digest_excluded(knob: str) -> bool:
    """Whether ``knob`` stays out of the config digest (neutral, and not kept there for old records)."""
    return any(
        not n.in_digest and (knob == n.knob or knob == n.knob.rstrip(".") or knob.startswith(n.knob.rstrip(".") + "."))
        for n in NEUTRAL
    )


def without_excluded(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a nested config) without the knobs :func:`digest_excluded` leaves out."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if digest_excluded(key):
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not digest_excluded(f"{key}.{k}")}
        out[key] = value
    return out


def config_digest(cfg: dict[str, Any], weights_sha256: str | None = None, dataset_sha256: str | None = None) -> str:
    """The run digest: SHA-256 of the config's JSON (sorted keys) without the excluded knobs, with the
    content hash of a user weight file and of a file-backed dataset's files when there are (an embedded
    dataset has none, so its runs keep their digests)."""
    view = without_excluded(cfg)
    if weights_sha256 is not None:
        view["weights_sha256"] = weights_sha256
    if dataset_sha256 is not None:
        view["dataset_sha256"] = dataset_sha256
    blob = json.dumps(view, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def record_filename(choices: dict, rate: float, digest: str) -> str:
    """``<task>-<model>-<dataset>-<allocator>-<reconstruction>-s<rate>-<digest[:12]>.json``; the choices part
    made a safe name (a long one ends in a hash), the digest always last (records are found by it)."""
    parts = [str(choices.get(k, "?")) for k in ("task", "model", "dataset", "allocator", "reconstruction")]
    return safe_name("-".join(parts), limit=120) + f"-s{rate:g}-{digest[:12]}.json"
