"""One GPU per job when a sweep runs several jobs at once on a multi-GPU machine.

Rule: with ``device=auto`` and more than one visible GPU, a job claims the first GPU whose
lock file it can take (an exclusive, non-blocking ``flock`` under a per-user lock folder),
keeps it for the whole run, and waits (polling) while all are taken. The OS drops a lock
when its process dies, so a killed sweep never leaves a GPU claimed.

Why locks and not ``CUDA_VISIBLE_DEVICES = job number % GPUs``: joblib (loky) reuses worker
processes, whose CUDA runtime is already initialised after their first job, so a later
change of the variable is ignored; and the job number says nothing about which GPU just
became free (job 3 may start while job 0 still runs). The claimed GPU is used as an explicit
``cuda:N`` and made the process's current device, so code that says plain "cuda" follows.
With one GPU (a Slurm job gets its own through ``gpus_per_node: 1``) or none, nothing is
claimed. On CPU, a joblib job uses its share of the cores instead of all of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("ptsbench")


def default_lock_dir() -> Path:
    return Path(os.environ.get("PTSBENCH_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"ptsbench-gpus-{os.getuid()}")


def visible_gpus() -> list[str]:
    """Physical ids of the visible GPUs (from CUDA_VISIBLE_DEVICES when set), without touching CUDA."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else []
    return [ids[i] if i < len(ids) else str(i) for i in range(n)]


@contextlib.contextmanager
def claim_device(
    spec: str, gpus: list[str] | None = None, lock_dir: str | Path | None = None, start: int = 0, poll_s: float = 2.0
) -> Iterator[str]:
    """Yield the device this job should use: ``spec`` itself unless it is 'auto' with several
    GPUs, then 'cuda:N' for a GPU no other job holds (``gpus``: physical ids, default visible)."""
    if spec != "auto":
        yield spec
        return
    gpus = visible_gpus() if gpus is None else gpus
    if len(gpus) <= 1:
        yield spec
        return
    folder = Path(lock_dir) if lock_dir else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for k in range(len(gpus)):
            index = (start + k) % len(gpus)
            handle = open(folder / f"gpu-{gpus[index]}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            try:
                handle.write(f"{os.getpid()}\n")
                handle.flush()
                log.info("[gpu] job pid %d runs on cuda:%d (GPU %s)", os.getpid(), index, gpus[index])
                yield f"cuda:{index}"
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if not waited:
            log.info("[gpu] all %d GPUs are taken by other jobs; waiting for one", len(gpus))
            waited = True
        time.sleep(poll_s)


def cpu_threads_per_job(n_jobs: int | None, cores: int | None = None) -> int | None:
    """Torch threads for one of ``n_jobs`` concurrent CPU jobs (None: leave torch's default).

    >>> cpu_threads_per_job(2, cores=16), cpu_threads_per_job(32, cores=16), cpu_threads_per_job(-1, cores=16)
    (8, 1, 1)
    """
    cores = cores or len(os.sched_getaffinity(0))
    if n_jobs is not None and n_jobs < 0:  # joblib: -1 = all cores, -2 = all but one, ...
        n_jobs = max(1, cores + 1 + n_jobs)
    if not n_jobs or n_jobs <= 1:
        return None
    return max(1, cores // n_jobs)


def default_parallel_jobs() -> int:
    """n_jobs of ``hydra/launcher=parallel``: one per visible GPU, else one per two cores."""
    n_gpus = len(visible_gpus())
    return n_gpus if n_gpus else max(1, len(os.sched_getaffinity(0)) // 2)
