"""Content hashes of files, remembered under a key a user cannot forge, so results follow content.

The hash is SHA-256 of the bytes only (machine-independent: the same file gives the same digest
anywhere). Hashing is not free (a 1.2 GB ViT-L checkpoint took 4.6 s on the project's 2-core
machine, ImageNet's 6.4 GB val split would take about 25 s), so a hash is remembered in a JSON index
under the file's absolute path and its *stat key*: device, inode, size, modification time and
status-change time (ns). ``cp B.pt w.pt; touch -d '<old time>' w.pt`` restores size and mtime but
not ctime, which the kernel sets to "now" on every write, rename or ``touch`` and which no call
sets back (only moving the system clock would); a copy onto another file changes the inode. So any
rewrite since the hash was taken misses the index and is hashed again.

A file whose key changes while it is hashed is hashed again (at most 3 times) and only a hash
taken between two equal keys is remembered. Writers of one index (parallel jobs) merge their
entries into the file's current content before the atomic replace; an entry lost to a race is
only hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .records.io import write_json_atomic

log = logging.getLogger("ptsbench")
CHUNK = 1 << 22


def stat_key(path: str | Path) -> str:
    """``dev:ino:size:mtime_ns:ctime_ns`` of ``path`` (a rewrite always changes it)."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class HashIndex:
    """SHA-256 of files, remembered in ``index_file`` (None: never remembered)."""

    def __init__(self, index_file: str | Path | None):
        self.index_file = Path(index_file) if index_file else None
        self.entries = self._read()
        self.new: dict[str, dict] = {}

    def _read(self) -> dict:
        if self.index_file is None or not self.index_file.exists():
            return {}
        try:
            entries = json.loads(self.index_file.read_text())
        except (OSError, ValueError):
            log.warning("[cache] %s is unreadable; rebuilding it", self.index_file)
            return {}
        return entries if isinstance(entries, dict) else {}

    def sha256(self, path: str | Path) -> str:
        path = Path(path).resolve()
        key = stat_key(path)
        hit = self.entries.get(str(path))
        if isinstance(hit, dict) and hit.get("signature") == key and isinstance(hit.get("sha256"), str):
            return hit["sha256"]
        for _ in range(3):
            digest = sha256_file(path)
            after = stat_key(path)
            if after == key:
                self.new[str(path)] = self.entries[str(path)] = {"signature": key, "sha256": digest}
                break
            key = after  # rewritten while hashed: hash again
        return digest

    def save(self) -> None:
        """Merge this index's new entries into the file (no-op when nothing new or no file)."""
        if self.index_file is None or not self.new:
            return
        try:
            write_json_atomic(self.index_file, {**self._read(), **self.new})
            self.new = {}
        except OSError as e:  # the hashes are still right; only the fast path is lost
            log.warning("[cache] cannot write %s (%s)", self.index_file, e)
