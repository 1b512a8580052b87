"""The shipped zoo checkpoints recognised by content, not by the word ``zoo``.

``model.weights=src/ptsbench/zoo_checkpoints/cifar_resnet20__mnist5k.pt`` is the zoo checkpoint as
much as ``model.weights=zoo`` is, and so is any copy of it: a rule that holds for zoo weights
(their training images must stay out of the test split) must hold for every path to the same
bytes. :func:`zoo_checkpoint_of` compares the file's SHA-256 with those of the files in
``zoo_checkpoints/`` (``<arch>__<dataset>.pt``); a file of another size is never hashed, and the
zoo's own hashes are computed once per process (14 MB in all).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..file_hashes import sha256_file, stat_key
from .sources import ZOO_DIR


@functools.lru_cache(maxsize=4)
def _zoo_hashes(listing: tuple[tuple[str, str], ...]) -> dict[tuple[int, str], tuple[str, str]]:
    """(size, sha256) -> (arch, dataset) of the zoo files; ``listing`` (name, stat key) keys the cache."""
    out = {}
    for name, _ in listing:
        path = ZOO_DIR / name
        arch, _, dataset = path.stem.partition("__")
        out[(path.stat().st_size, sha256_file(path))] = (arch, dataset)
    return out


def zoo_checkpoint_of(path: str | Path) -> tuple[str, str] | None:
    """(arch, dataset) of the shipped zoo checkpoint whose bytes ``path`` holds, else None."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    files = sorted(ZOO_DIR.glob("*__*.pt"))
    hashes = _zoo_hashes(tuple((p.name, stat_key(p)) for p in files))
    size = os.path.getsize(path)
    if not any(s == size for s, _ in hashes):
        return None
    return hashes.get((size, sha256_file(path)))
