"""Hydra callbacks of PTSBench sweeps.

``AggregateTables`` rebuilds the track tables when a multirun ends, whatever launcher ran it
(basic, joblib, submitit local or Slurm: ``on_multirun_end`` runs on the submitting machine
after every job returned). Enable it with ``hydra/callbacks=aggregate`` on the command line,
or ``- override /hydra/callbacks: aggregate`` in an experiment's defaults.
A failing aggregation is logged, never allowed to fail a finished sweep.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .file_names import expand_path

log = logging.getLogger("ptsbench")


class AggregateTables(Callback):
    def __init__(
        self,
        records_dir: str | None = None,
        out_dir: str | None = None,
        model_allocator: str = "l2norm",
        plots: bool = True,
    ) -> None:
        self.records_dir = records_dir
        self.out_dir = out_dir
        self.model_allocator = model_allocator
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .aggregate import aggregate

        records = str(expand_path(self.records_dir or config.paths.records_dir))
        out = str(expand_path(self.out_dir or f"{config.paths.output_dir}/tables"))
        try:
            aggregate(records, out, self.model_allocator, plots=self.plots, echo=print)
        except Exception as e:  # noqa: BLE001 - the sweep's records are safe; the tables can be rebuilt
            log.error(
                "aggregation after the sweep failed (%s: %s); rerun `python -m ptsbench.aggregate %s --out %s`",
                type(e).__name__,
                e,
                records,
                out,
            )
