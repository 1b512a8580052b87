"""A claim on a run in progress: ``<record>.claim`` beside its record, so two sweeps into one output folder
compute each run once.

The claim is created atomically (``O_CREAT | O_EXCL``) and holds the claimant's pid, host and start time.
A claim whose pid is dead on this host is stale (the run was killed) and is taken over, under a lock on the
records folder so that two takers cannot both win; a claim of another host is trusted. The claim is
released (removed, if it is still ours) when the run ends, finished or failed.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLAIM_SUFFIX = ".claim"
UNREADABLE_GRACE_S = 60.0  # a claim file still empty this long after its creation was left by a crash


def claim_path(record_path: str | Path) -> Path:
    return Path(record_path).with_suffix(CLAIM_SUFFIX)


@dataclass
class Claim:
    """The outcome of :func:`claim_run`: ours (``holder`` None; release it) or held by ``holder``."""

    path: Path
    holder: dict | None = None
    token: str = ""
    created: tuple[Path, ...] = ()  # folders made for the claim, deepest first

    def release(self) -> None:
        """Remove the claim if it is still ours, and the folders made for it if nothing else went there (a
        run refused mid-way leaves no empty records folder behind)."""
        if self.holder is None and read_claim(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: a record or another claim is there

    def describe(self) -> str:
        h = self.holder or {}
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(h.get("time", 0))))
        return f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {since}"


def read_claim(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def is_stale(path: Path, holder: dict) -> bool:
    """Whether the claim in ``path`` (read as ``holder``) belongs to no live process."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_GRACE_S
        except OSError:
            return True  # gone meanwhile
    if holder.get("host") != socket.gethostname():
        return False  # another machine's process: it cannot be checked from here
    pid = int(holder.get("pid", 0))
    if pid == os.getpid():
        return True  # this process's own leftover (a run that ended without releasing)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def claim_run(record_path: str | Path) -> Claim:
    """Claim the run of ``record_path``; a stale claim is taken over, a live one is reported as the holder."""
    path = claim_path(record_path)
    created = tuple(p for p in (path.parent, *path.parent.parents) if not p.exists())
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "token": token}
    if _create(path, mine):
        return Claim(path, None, token, created)
    with _folder_lock(path.parent):
        holder = read_claim(path)
        if path.exists() and not is_stale(path, holder):
            return Claim(path, holder or {"pid": "?", "host": "?"})
        path.unlink(missing_ok=True)
        if _create(path, mine):
            return Claim(path, None, token, created)
    return Claim(path, read_claim(path) or {"pid": "?", "host": "?"})


def _create(path: Path, content: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(content, f)
    return True


@contextmanager
def _folder_lock(folder: Path):
    with open(folder / ".claims.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
