"""Content hash of a weight file (or a diffusers folder), so that results follow the weights.

Replacing the file behind ``model.weights=/path/w.pt`` must change the run digest and the
dense-metric cache key; a path or config alone cannot tell. SHA-256 of the bytes (a folder: of
its files' relative names and hashes), remembered in ``<cache_dir>/weights_sha256.json`` under a
key no rewrite can keep (inode and change time included: :mod:`ptsbench.file_hashes`), so a
file copied over the old one and touched back to its old mtime is hashed again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..file_hashes import HashIndex


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def weights_sha256(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 of the weights at ``path`` (a folder: of ``<relative name>\\t<sha256>`` lines)."""
    path = Path(path).expanduser().resolve()
    index = HashIndex(Path(str(cache_dir)) / "weights_sha256.json" if cache_dir else None)
    if path.is_file():
        digest = index.sha256(path)
    else:
        total = hashlib.sha256()
        for p in _files(path):
            total.update(f"{p.relative_to(path)}\t{index.sha256(p)}\n".encode())
        digest = total.hexdigest()
    index.save()
    return digest
