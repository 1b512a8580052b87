"""Command-line entry: ``python -m ptsbench.run [-m] key=value ...`` (Hydra).

A thin ``@hydra.main`` around :func:`ptsbench.pipeline.run`, which tests call directly.
In a multirun a failed job is logged with its name (its record says ``status: failed``; a config
error is recorded with ``phase: config``) and the sweep goes on; the sweep prints its plan and a
closing summary (``ptsbench.sweep_report``) and exits 1 when any run failed. A single failed run
exits non-zero (2 for a config error). A parallel job's worker exits when the sweep's parent dies.
Under a parallel launcher each job claims its own GPU
(``ptsbench.devices``); ``hydra/launcher=parallel`` (joblib) or ``slurm`` (submitit) scale out.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from . import config_dir
from .config import register
from .config.failures import record_config_failure
from .config.groups import check_overrides
from .config.overrides import check_launcher_overrides, check_override_syntax
from .config.preflight import check_device
from .devices import claim_device, cpu_threads_per_job
from .errors import ConfigError
from .orphans import exit_with_parent
from .pipeline import run
from .sweep_report import OUTCOME_ENV, read_outcome

__all__ = ["main", "run"]


def _limit_cpu_threads(hc) -> None:
    """A joblib job on CPU takes its share of the cores, not all of them (no oversubscription)."""
    launcher = hc.get("launcher") or {}
    if "joblib" in str(launcher.get("_target_", "")):
        import torch

        threads = cpu_threads_per_job(launcher.get("n_jobs"))
        if threads:
            torch.set_num_threads(threads)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> dict | None:
    register()  # a launcher's worker process starts here, not in main()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    hc: DictConfig = cast(DictConfig, HydraConfig.get())  # the hydra node itself, not the HydraConf dataclass
    multirun = hc.mode == RunMode.MULTIRUN
    job_name = hc.job.get("override_dirname") or hc.job.name
    if multirun and "joblib" in str((hc.get("launcher") or {}).get("_target_", "")):
        exit_with_parent()
    try:
        check_device(str(cfg.device))  # before a GPU is claimed or made current
        with claim_device(str(cfg.device), start=int(hc.job.get("num") or 0)) as device:
            if device != str(cfg.device):  # `device` is not part of the config digest
                with open_dict(cfg):
                    cfg.device = device
            if device.startswith("cuda:"):
                import torch

                torch.cuda.set_device(device)
            elif multirun:
                _limit_cpu_threads(hc)
            return run(cfg, overrides=list(hc.overrides.task))
    except ConfigError as e:
        if not multirun:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        # one bad case must not end the sweep (nor, under joblib, kill its sibling jobs)
        logging.getLogger("ptsbench").error("[failed] %s: config error: %s", job_name, e)
        record_config_failure(cfg, list(hc.overrides.task), e)
        return None
    except Exception as e:  # noqa: BLE001
        logging.getLogger("ptsbench").error("[failed] %s: %s: %s", job_name, type(e).__name__, e)
        if not multirun:
            raise SystemExit(1) from None
        return None


def cli() -> int:
    """Hydra's run or multirun; returns the exit status: 2 for a refused config, 1 when the sweep summary
    counted a failed run (after every callback, so the tables of a partly failed sweep are still written;
    the summary, handed back through ``$PTSBENCH_SWEEP_OUTCOME``, is printed last). A knob no option of its
    group knows fails first, naming the valid ones (Hydra would only say "Key 'iterz' is not in struct"), as does
    a value Hydra cannot parse (say how to quote it) and a ``hydra.launcher.n_jobs`` that runs no job."""
    try:
        register()  # first: plugins named outside the tree add options and knobs the checks must know
        check_override_syntax(sys.argv[1:])  # Hydra's own parser error is a traceback-like block
        check_launcher_overrides(sys.argv[1:])
        own_configs_only = not any(a.split("=")[0] in ("-cd", "--config-dir", "-cp", "--config-path") for a in sys.argv)
        check_overrides([a for a in sys.argv[1:] if not a.startswith("-")], options=own_configs_only)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ptsbench-sweep-") as tmp:
        outcome_file = Path(tmp) / "outcome.json"
        os.environ[OUTCOME_ENV] = str(outcome_file)
        try:
            hydra_main()
        finally:
            os.environ.pop(OUTCOME_ENV, None)
            outcome = read_outcome(outcome_file)
            if outcome.summary:
                print(outcome.summary, flush=True)
    return 1 if outcome.failed else 0


def main() -> None:
    """The console entry (``ptsbench-run``)."""
    raise SystemExit(cli())


if __name__ == "__main__":
    main()
