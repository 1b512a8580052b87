"""Headless Chromium for the report page: a screenshot beside ``report.html``, and the rendered DOM
plus the browser's console log for the test that checks the page.

Chromium is optional (Debian's ``chromium``; ``PTSBENCH_CHROMIUM`` names another binary): without
it the report is still written, only the screenshot is skipped. The flags keep a run offline and
self-contained: no sandbox (containers run as root), no GPU, no background networking, updates or
sync, a throw-away profile directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


@dataclass
class Rendered:
    returncode: int
    dom: str
    log: str

    @property
    def console(self) -> list[str]:
        """The page's console messages (errors, uncaught exceptions, warnings), one per line."""
        return [line.split("] ", 1)[-1] for line in self.log.splitlines() if ":CONSOLE" in line]


def find_chromium() -> str | None:
    """The Chromium binary to use, or None."""
    named = os.environ.get("PTSBENCH_CHROMIUM")
    if named:
        return shutil.which(named) or (named if Path(named).is_file() else None)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def _run(binary: str, page: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="ptsbench-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, Path(page).resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def render(page: Path, binary: str | None = None, timeout: float = 60.0) -> Rendered:
    """The DOM after load (``--dump-dom``) and the console log (``--enable-logging=stderr``)."""
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found (install Debian's 'chromium' or set PTSBENCH_CHROMIUM)")
    proc = _run(binary, page, ["--enable-logging=stderr", "--v=0", "--dump-dom"], timeout)
    return Rendered(proc.returncode, proc.stdout, proc.stderr)


def screenshot(
    page: Path, png: Path, binary: str | None = None, size=(1280, 3200), timeout: float = 60.0
) -> Path | None:
    """Write a PNG of the page's first ``size`` pixels; None when Chromium is absent or fails."""
    binary = binary or find_chromium()
    if binary is None:
        return None
    try:
        _run(binary, page, [f"--screenshot={Path(png).resolve()}", f"--window-size={size[0]},{size[1]}"], timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return png if Path(png).is_file() and Path(png).stat().st_size else None
