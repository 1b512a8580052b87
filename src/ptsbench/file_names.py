"""File and folder names made from config values, and the user's paths expanded once.

A config value can hold anything a shell passes (``model.weights=../../home/me/ckpt/good.pt``), so every
name built from one goes through :func:`safe_name`: no ``/``, no ``..``, no leading dot, and at most
:data:`MAX_NAME` bytes (a longer name keeps its head and ends in a hash of the whole, so it stays unique
and never fails with "File name too long"). Paths the user writes (``paths.*``) go through
:func:`expand_path`: ``~`` and environment variables expanded exactly once.

:func:`register_resolvers` adds the OmegaConf resolvers Hydra's run and sweep folders use
(conf/config.yaml): ``ptsbench_dirname`` (a safe folder name from ``hydra.job.override_dirname``) and
``ptsbench_path`` (``paths.output_dir`` expanded). ``ptsbench.config`` registers them when imported,
because a launcher's worker resolves those folders before the task function (and its ``register()``)
runs.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# the file-name limit is 255 bytes on common file systems; room is left for suffixes and temporary names
# (``.<name>.<random>.tmp``, ``.failed.json``, ``.safetensors``, ``.claim``)
MAX_NAME = 180
_HASH_CHARS = 16
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
_DOTS = re.compile(r"\.{2,}")


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """``text`` as one file or folder name: separators and control characters become ``_``, as does any run
    of two or more dots and a leading dot; longer than ``limit`` bytes, its head plus a hash of all of it."""
    name = _DOTS.sub("_", _UNSAFE.sub("_", str(text)))
    if name.startswith("."):
        name = "_" + name[1:]
    encoded = name.encode()
    if len(encoded) <= limit:
        return name
    tail = hashlib.sha256(encoded).hexdigest()[:_HASH_CHARS]
    head = encoded[: limit - _HASH_CHARS - 1].decode(errors="ignore")  # never half a UTF-8 character
    return f"{head}-{tail}"


def run_dirname(override_dirname: str) -> str:
    """Hydra's run folder or sweep subfolder name for a job's overrides (empty stays empty)."""
    return safe_name(override_dirname) if override_dirname else ""


def expand_path(value) -> Path:
    """A user's path with ``~`` and ``$VARS`` expanded (once: a value holding a literal ``$`` after expansion
    is not expanded again)."""
    return Path(os.path.expandvars(os.path.expanduser(str(value))))


def register_resolvers() -> None:
    """The resolvers of Hydra's run and sweep folders (idempotent)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("ptsbench_dirname", lambda s: run_dirname(str(s)), replace=True)
    OmegaConf.register_new_resolver("ptsbench_path", lambda s: str(expand_path(s)), replace=True)
