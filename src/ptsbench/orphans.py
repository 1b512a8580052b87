"""Worker processes of a parallel sweep exit when the sweep's parent process dies.

joblib's loky workers outlive a ``kill -9`` of the Hydra process that started them and keep
computing at full CPU. A daemon thread in the worker polls its parent pid: once the worker is
re-parented (the parent died), it ends the process. Polling rather than ``PR_SET_PDEATHSIG``:
that signal fires when the parent *thread* that forked the worker exits (loky forks from a
manager thread), and it exists only on Linux.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("ptsbench")
_started: set[int] = set()  # pids that already run a watchdog (loky reuses a worker for many jobs)


def exit_with_parent(parent_pid: int | None = None, poll_s: float = 1.0) -> bool:
    """Start (once per process) a daemon thread that ends this process when ``parent_pid``
    (default: the current parent) is no longer its parent. Returns whether a thread was started."""
    parent = os.getppid() if parent_pid is None else parent_pid
    if os.getpid() in _started or parent <= 1:
        return False
    _started.add(os.getpid())

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(poll_s):
            if os.getppid() != parent:
                log.error("[orphan] the sweep's parent process %d is gone; worker %d exits", parent, os.getpid())
                os._exit(1)

    threading.Thread(target=watch, name="ptsbench-exit-with-parent", daemon=True).start()
    return True
