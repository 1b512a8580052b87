"""Many sweeps in one process pool: what ``make demo`` uses instead of one Hydra multirun per sweep.

A sweep is (experiment, overrides) exactly as typed after ``python -m ptsbench.run -m``; ``expand``
turns it into the job override lists Hydra's basic sweeper would launch (the experiment's
``hydra.sweeper.params`` merged with the overrides, a command-line key replacing the experiment's
sweep of the same key). ``run_jobs`` runs them on ``n_jobs`` long-lived workers, each composing its
job with Hydra's compose API (so ``choices``, digests and records are those of the multirun) and
calling ``pipeline.run``. Why not one multirun per sweep: every multirun pays an interpreter, torch
and Hydra start-up plus a worker spawn (~15 s on 2 cores), and its last job leaves a core idle; the
demo's 14 sweeps spent about a third of a 10-minute budget that way. Jobs are dispatched in the
order given (callers put the longest first), a failed job is counted and the batch goes on, as in
a multirun.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import Counter

from . import config_dir

_worker_ready = False


def expand(experiment: str, overrides: list[str]) -> list[list[str]]:
    """Job override lists of ``-m experiment=<experiment> <overrides>``, in Hydra's sweep order."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    sweep = {str(k): f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()}
    for o in overrides:
        sweep[o.split("=", 1)[0].lstrip("+~")] = o
    parsed = OverridesParser.create().parse_overrides(list(sweep.values()))
    return [[f"experiment={experiment}", *job] for job in BasicSweeper.split_arguments(parsed, None)[0]]


def _init_worker(threads: int | None) -> None:
    global _worker_ready
    if _worker_ready:
        return
    import torch
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .config import register
    from .orphans import exit_with_parent

    register()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    if threads:
        torch.set_num_threads(threads)
    if multiprocessing.parent_process() is not None:  # a pool worker, not the caller itself
        exit_with_parent()
    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(config_dir()), version_base="1.3")
    _worker_ready = True


def run_job(overrides: list[str], threads: int | None = None) -> tuple[str, str, float]:
    """(status, name or reason, seconds) of one job: ok, skipped (finished before) or failed."""
    _init_worker(threads)
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from .config.failures import record_config_failure
    from .errors import ConfigError
    from .pipeline import run

    t0 = time.perf_counter()
    cfg = None
    try:
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        record = run(cfg, overrides=overrides)
        status = "skipped" if record.get("skipped") else str(record.get("status", "ok"))
        return status, str(record.get("name", "")), time.perf_counter() - t0
    except ConfigError as e:
        if cfg is not None:
            record_config_failure(cfg, overrides, e)
        return "failed", f"{' '.join(overrides)}: config error: {e}", time.perf_counter() - t0
    except Exception as e:  # noqa: BLE001  one bad job must not end the batch
        return "failed", f"{' '.join(overrides)}: {type(e).__name__}: {e}", time.perf_counter() - t0


def run_jobs(jobs: list[list[str]], n_jobs: int = 2, log=print) -> Counter:
    """Run ``jobs`` on ``n_jobs`` workers (1 torch thread each on CPU when n_jobs > 1); returns the
    count per status and logs one line per finished job."""
    from joblib import Parallel, delayed

    from .devices import cpu_threads_per_job

    threads = cpu_threads_per_job(n_jobs)
    counts: Counter = Counter()
    t0 = time.perf_counter()
    results = Parallel(n_jobs=n_jobs, backend="loky", batch_size=1, return_as="generator_unordered")(
        delayed(run_job)(job, threads) for job in jobs
    )
    for status, what, seconds in results:
        counts[status] += 1
        done = sum(counts.values())
        log(f"[{done}/{len(jobs)} {time.perf_counter() - t0:.0f}s] {status}: {what} ({seconds:.1f}s)")
    return counts
