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


PROBE_BYTES = 64 * 1024  # a record with its per-layer tables is tens of KiB: the probe must fit where it will


def check_record_target(record_path: Path) -> None:
    """The record can be written where it goes, checked before the run and creating nothing: every symlink
    on the way resolves (none dangling, no loop), the target is not a folder, and a probe file of a record's
    size is written, synced and removed in the nearest existing folder. A failure is one ConfigError naming
    the path and ``paths.records_dir``."""
    from ..errors import ConfigError

    fix = "point paths.records_dir at a writable folder with free space, e.g. paths.records_dir=$HOME/ptsbench/records"
    try:
        record_path.resolve()  # a symlink loop anywhere on the way raises
        existing = record_path
        while not existing.exists():
            if existing.is_symlink():
                raise ConfigError(
                    f"record target '{existing}' is a symlink to '{os.readlink(existing)}', which does not exist; {fix}"
                )
            existing = existing.parent
        if existing == record_path and not record_path.is_file():
            raise ConfigError(f"record target '{record_path}' exists and is not a file; remove it or {fix}")
        folder = record_path.parent if existing == record_path else existing
        if not folder.is_dir():
            raise ConfigError(f"record target '{record_path}': '{folder}' is not a folder; {fix}")
        _probe_write(folder)
    except RuntimeError as e:  # pathlib's "Symlink loop from ..."
        raise ConfigError(f"record target '{record_path}': {e}; {fix}") from None
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ConfigError(f"record target '{record_path}' cannot be written ({why}: {e.filename}); {fix}") from None


def _probe_write(folder: Path) -> None:
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.unlink(probe)


def write_record_or_fallback(out_path: Path, record: dict, fallbacks: list[Path]) -> Path:
    """:func:`write_record`; when that fails (a full disk, a folder gone), the record is written to the first
    of ``fallbacks`` that takes it and the log says where: a finished result is never dropped."""
    try:
        return write_record(out_path, record)
    except OSError as e:
        first_error = e
    for folder in fallbacks:
        try:
            path = write_json_atomic(Path(folder) / out_path.name, record)
        except OSError:
            continue
        log.warning(
            "[record] could not write %s (%s); the record is at %s instead: move it into paths.records_dir",
            out_path,
            first_error.strerror or first_error,
            path,
        )
        return path
    raise first_error
