"""Content hash of a weight file (or a diffusers folder), so that results follow the weights.

Replacing the file behind ``model.weights=/path/w.pt`` must change the run digest and the
dense-metric cache key; a path or config alone cannot tell. SHA-256 of the
bytes, with a fast path: the hash is remembered in ``<cache_dir>/weights_sha256.json`` under the
file's absolute path, size and modification time (ns), and recomputed only when one changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ..records.io import write_json_atomic

log = logging.getLogger("ptsbench")
CHUNK = 1 << 22


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def _signature(path: Path) -> str:
    """Names, sizes and mtimes of the file(s): cheap, changes whenever the content is rewritten."""
    parts = [
        f"{p.relative_to(path) if p != path else p.name}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}"
        for p in _files(path)
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _content_sha256(path: Path) -> str:
    total = hashlib.sha256()
    for p in _files(path):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        total.update(f"{p.relative_to(path) if p != path else ''}\t{h.hexdigest()}\n".encode())
    return total.hexdigest() if path.is_dir() else h.hexdigest()


def weights_sha256(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 of the weights at ``path``; remembered per (path, size, mtime) under ``cache_dir``."""
    path = Path(path).expanduser().resolve()
    index_file = Path(str(cache_dir)) / "weights_sha256.json" if cache_dir else None
    signature = _signature(path)
    index: dict = {}
    if index_file is not None and index_file.exists():
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError):
            log.warning("[cache] %s is unreadable; rebuilding it", index_file)
            index = {}
    hit = index.get(str(path)) if isinstance(index, dict) else None
    if isinstance(hit, dict) and hit.get("signature") == signature and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    digest = _content_sha256(path)
    if index_file is not None:
        index = index if isinstance(index, dict) else {}
        index[str(path)] = {"signature": signature, "sha256": digest}
        try:
            write_json_atomic(index_file, index)
        except OSError as e:  # the hash is still right; only the fast path is lost
            log.warning("[cache] cannot write %s (%s)", index_file, e)
    return digest
