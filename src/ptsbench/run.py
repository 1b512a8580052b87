"""Command-line entry: ``python -m ptsbench.run [-m] key=value ...`` (Hydra).

A thin ``@hydra.main`` around :func:`ptsbench.pipeline.run`, which tests call directly.
In a multirun a failed job is logged (its record says ``status: failed``) and the sweep goes
on; a single failed run exits non-zero.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .errors import ConfigError
from .pipeline import run

__all__ = ["main", "run"]

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return run(cfg, overrides=list(hc.overrides.task))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as e:  # noqa: BLE001
        logging.getLogger("ptsbench").error("[failed] %s: %s", type(e).__name__, e)
        if not multirun:
            raise SystemExit(1) from None
        return None


if __name__ == "__main__":
    main()
