"""Run records on disk: one JSON per run, written atomically, found by its config digest."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("ptsbench")


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


def write_record(out_path: Path, record: dict) -> Path:
    """Write ``record``; a failure never replaces an ``ok`` record (e.g. a re-run with another
    ``device``, which is outside the digest): it goes beside it as ``<name>.failed.json``."""
    if record["status"] != "ok" and out_path.exists():
        try:
            if json.loads(out_path.read_text()).get("status") == "ok":
                out_path = out_path.with_name(f"{out_path.stem}.failed.json")
        except (OSError, ValueError):
            pass  # unreadable: replacing it loses nothing
    write_json_atomic(out_path, record)
    log.info("[record] %s: %s", record["status"], out_path)
    return out_path
