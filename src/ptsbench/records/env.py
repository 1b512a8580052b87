"""Package versions, git revision and device facts for the run record."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "timm", "hydra-core", "omegaconf", "numpy", "diffusers", "torchmetrics")


@functools.lru_cache(maxsize=1)
def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "absent"
    try:
        out["ptsbench"] = metadata.version("ptsbench")
    except metadata.PackageNotFoundError:
        from .. import __version__

        out["ptsbench"] = __version__
    return out


def env_record(device) -> dict:
    import torch

    rec = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_revision": git_revision(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    if str(device).startswith("cuda"):
        rec["device_name"] = torch.cuda.get_device_name(device)
    return rec
