"""Phases of a run: each one timed into the record, and the one an error escaped from named.

``with timer("allocate"): ...`` replaces a ``phase = ...`` assignment plus a timer tick per
step, so the pipeline reads as its list of phases and a failed record always says where it
failed (``error.phase``). A phase's time lands in ``timing`` only when it completes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    def __init__(self, timing: dict[str, float]) -> None:
        self.timing = timing
        self.current: str | None = None  # the phase running now, or the one that raised

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        t0 = time.perf_counter()
        yield
        self.timing[name] = round(time.perf_counter() - t0, 4)
